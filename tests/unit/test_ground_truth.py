"""The ground-truth join: labels by the target rule, one per key, every logged row kept with
its label or the reason it has none; and the labelled log's format round trip."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.config import ProjectConfig, load_config
from mlops.errors import ConfigError
from mlops.prediction_log import (
    AMBIGUOUS_KEY,
    JOINED,
    LABEL,
    LABEL_STATUS,
    NO_KEY,
    NO_LABEL_YET,
    frame_keys,
    read_labelled_log,
    write_labelled_day,
)
from mlops.storage import LocalStore
from tasks.ground_truth import batch_labels, collect_labels, join_counts, join_ground_truth

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def config() -> ProjectConfig:
    return load_config(REPO_ROOT / "mlops.yaml")


def flights(n: int, seed: int = 0, month: int = 6) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "year": 2013,
            "month": month,
            "day": rng.integers(1, 29, n),
            "carrier": rng.choice(["UA", "AA", "DL"], n),
            "flight": np.arange(n) + 100,
            "sched_dep_time": rng.integers(500, 2300, n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "arr_delay": rng.normal(5, 30, n),
        }
    )


def logged(
    frame: pd.DataFrame, config: ProjectConfig, arm: str = "champion", version: str = "1"
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": frame_keys(frame, config.data.key_columns),
            "request_id": [f"r{i}" for i in range(len(frame))],
            "arm": arm,
            "model_version": version,
            "served": True,
            "score": 0.3,
        }
    )


def test_labels_follow_the_target_rule_and_skip_unlabelled_rows(config: ProjectConfig) -> None:
    frame = flights(60)
    frame.loc[0, "arr_delay"] = np.nan  # cancelled: no label
    labels = batch_labels(frame, config)
    assert len(labels) == 59
    expected = (frame["arr_delay"].iloc[1:] >= config.target.value).astype(int)
    assert labels[LABEL].tolist() == expected.tolist()
    assert labels["key"].iloc[0] == frame_keys(frame.iloc[1:2], config.data.key_columns).iloc[0]


def test_a_batch_without_the_key_columns_is_refused_by_name(config: ProjectConfig) -> None:
    with pytest.raises(ConfigError, match="lacks \\['origin'\\]"):
        batch_labels(flights(5).drop(columns="origin"), config)


def test_every_logged_row_is_kept_with_its_label_or_why_not(config: ProjectConfig) -> None:
    frame = flights(100)
    log = logged(frame, config)
    log.loc[:9, "key"] = None  # ten requests sent no key
    labels = collect_labels([batch_labels(frame.iloc[50:], config)])  # half the flights landed
    joined = join_ground_truth(log, labels)
    assert len(joined) == 100 and joined["request_id"].tolist() == log["request_id"].tolist()
    status = joined[LABEL_STATUS].value_counts().to_dict()
    assert status == {JOINED: 50, NO_LABEL_YET: 40, NO_KEY: 10}
    truth = (frame["arr_delay"].iloc[50:] >= config.target.value).astype(int).tolist()
    assert joined.loc[50:, LABEL].astype(int).tolist() == truth
    assert joined.loc[:49, LABEL].isna().all()


def test_labels_that_land_twice_count_once_and_conflicting_ones_label_nothing(config: ProjectConfig) -> None:
    frame = flights(40)
    once = batch_labels(frame, config)
    twice = collect_labels([once, once])  # the same month landed again
    assert len(twice.frame) == 40 and not twice.ambiguous
    flipped = once.iloc[:5].assign(label=1 - once[LABEL].iloc[:5])  # a correction that disagrees
    clash = collect_labels([once, flipped])
    assert len(clash.frame) == 35 and clash.ambiguous == frozenset(once["key"].iloc[:5])
    joined = join_ground_truth(logged(frame, config), clash)
    assert (joined[LABEL_STATUS] == AMBIGUOUS_KEY).sum() == 5
    assert (joined[LABEL_STATUS] == JOINED).sum() == 35


def test_joining_again_replaces_the_day_instead_of_adding_to_it(
    config: ProjectConfig, tmp_path: Path
) -> None:
    store = LocalStore(tmp_path / "labelled")
    frame = flights(50)
    log = logged(frame, config)
    day = date(2026, 1, 2)
    first = join_ground_truth(log, collect_labels([batch_labels(frame.iloc[:20], config)]))
    write_labelled_day(store, day, first)
    later = join_ground_truth(first, collect_labels([batch_labels(frame, config)] * 2))  # more landed, twice
    write_labelled_day(store, day, later)
    read = read_labelled_log(store, day, day)
    assert len(read) == 50 and (read[LABEL_STATUS] == JOINED).sum() == 50
    assert read_labelled_log(store, date(2026, 1, 3), date(2026, 1, 4)).empty


def test_counts_per_arm_and_version(config: ProjectConfig) -> None:
    frame = flights(30)
    log = pd.concat([logged(frame, config), logged(frame, config, "challenger", "2")], ignore_index=True)
    log.loc[0, "key"] = None
    counts = join_counts(join_ground_truth(log, collect_labels([batch_labels(frame.iloc[:10], config)])))
    by_arm = {(c["arm"], c["model_version"]): c for c in counts}
    assert by_arm["champion", "1"] == {
        "arm": "champion",
        "model_version": "1",
        "logged": 30,
        JOINED: 9,
        NO_KEY: 1,
        NO_LABEL_YET: 20,
        AMBIGUOUS_KEY: 0,
    }
    assert by_arm["challenger", "2"][JOINED] == 10
