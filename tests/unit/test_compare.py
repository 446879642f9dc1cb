"""`mlops compare` logic: the record key, and each arm's metrics on the labelled log."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops.objective import BINARY
from mlops.prediction_log import frame_keys, record_key
from tasks.compare import compare_arms
from tasks.ground_truth import Labels, join_ground_truth

REPO_ROOT = Path(__file__).resolve().parents[2]
KEY_COLUMNS = ["year", "month", "day", "carrier", "flight", "sched_dep_time", "origin"]


def flights(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "year": 2013,
            "month": 6,
            "day": rng.integers(1, 31, n),
            "carrier": rng.choice(["UA", "AA", "DL"], n),
            "flight": np.arange(n) + 100,
            "sched_dep_time": rng.integers(500, 2300, n),
            "origin": rng.choice(["EWR", "JFK", "LGA"], n),
            "arr_delay": rng.normal(5, 30, n),
        }
    )


def test_record_key_and_frame_keys_agree_whatever_the_number_type() -> None:
    frame = flights(5)
    as_float = frame.astype({"day": "float64", "flight": "float64"})  # e.g. after a join with nulls
    keys = frame_keys(frame, KEY_COLUMNS)
    assert keys.tolist() == frame_keys(as_float, KEY_COLUMNS).tolist()
    row = as_float.iloc[2].to_dict()
    assert record_key(row, KEY_COLUMNS) == keys.iloc[2]
    assert keys.iloc[0].startswith("2013|6|") and ".0" not in keys.iloc[0]


def logged(
    frame: pd.DataFrame, arm: str, version: str, served: bool, scores: np.ndarray, mode: str
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "key": frame_keys(frame, KEY_COLUMNS),
            "request_id": [f"r{i}" for i in range(len(frame))],
            "arm": arm,
            "model_version": version,
            "mode": mode,
            "served": served,
            "score": scores,
        }
    )


def labels_of(frame: pd.DataFrame) -> Labels:
    return Labels(
        pd.DataFrame({"key": frame_keys(frame, KEY_COLUMNS), "label": (frame["arr_delay"] >= 15).astype(int)})
    )


def test_shadow_traffic_is_compared_on_the_same_rows() -> None:
    frame = flights(400)
    y = (frame["arr_delay"] >= 15).to_numpy()
    rng = np.random.default_rng(1)
    good = np.clip(y * 0.6 + rng.uniform(0, 0.4, len(y)), 0, 1)  # informative
    noise = rng.uniform(0, 1, len(y))  # uninformative
    log = pd.concat(
        [
            logged(frame, "champion", "1", True, noise, "shadow"),
            logged(frame, "challenger", "2", False, good, "shadow"),
        ],
        ignore_index=True,
    )
    result = compare_arms(join_ground_truth(log, labels_of(frame)), BINARY)
    assert result.logged_rows == 800 and result.labelled_rows == 800
    by_arm = {a.arm: a for a in result.arms}
    assert by_arm["challenger"].metrics["roc_auc"] > 0.95 > by_arm["champion"].metrics["roc_auc"]
    assert not by_arm["challenger"].served and by_arm["champion"].served
    assert result.paired_rows == 400
    assert result.paired["challenger"] == pytest.approx(by_arm["challenger"].metrics["roc_auc"])


def test_rows_without_key_or_label_are_counted_not_guessed() -> None:
    frame = flights(100)
    log = logged(frame, "champion", "1", True, np.full(100, 0.3), "canary")
    log.loc[:9, "key"] = None  # ten rows sent without a key
    labels = Labels(labels_of(frame).frame.iloc[50:])  # labels landed for half the flights
    result = compare_arms(join_ground_truth(log, labels), BINARY)
    assert result.keyed_rows == 90 and result.labelled_rows == 50
    assert any("carry no `key`" in note for note in result.notes)
    assert result.arms[0].labelled_rows == 50


def test_no_matching_key_says_so() -> None:
    log = logged(flights(50), "champion", "1", True, np.full(50, 0.3), "none")
    result = compare_arms(join_ground_truth(log, labels_of(flights(50, seed=9).assign(month=7))), BINARY)
    assert result.labelled_rows == 0
    assert any("no logged key matches" in note for note in result.notes)
    assert result.arms[0].metrics == {}
