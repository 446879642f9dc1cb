"""Features: joins, derivations, labels and the time split, on small hand-made frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlops.config import FeaturesConfig, JoinSpec, TargetConfig
from mlops.errors import BadBatchError, ConfigError
from tasks.features import (
    PERIOD_COLUMN,
    TrainingFrame,
    add_derived,
    build_preprocessor,
    join_tables,
    label_rows,
    time_split,
)


def test_left_join_keeps_every_batch_row_and_renames() -> None:
    batch = pd.DataFrame({"code": ["a", "b", "z"], "x": [1, 2, 3]})
    dim = pd.DataFrame({"id": ["a", "b"], "year": [2000, 2010], "unused": [0, 0]})
    joined = join_tables(
        batch, {"dim": dim}, [JoinSpec(table="dim", match={"code": "id"}, columns={"year": "built"})]
    )
    assert list(joined["code"]) == ["a", "b", "z"]
    assert joined["built"].tolist()[:2] == [2000, 2010]
    assert np.isnan(joined["built"].iloc[2])
    assert "unused" not in joined.columns


def test_join_refuses_to_overwrite_a_batch_column() -> None:
    batch = pd.DataFrame({"code": ["a"], "year": [2013]})
    dim = pd.DataFrame({"code": ["a"], "year": [2000]})
    with pytest.raises(ConfigError, match="year"):
        join_tables(
            batch, {"dim": dim}, [JoinSpec(table="dim", match={"code": "code"}, columns={"year": "year"})]
        )


def test_derived_columns_and_a_bad_expression_named() -> None:
    frame = pd.DataFrame(
        {
            "year": [2013, 2013],
            "built": [2000.0, np.nan],
            "t": pd.to_datetime(["2013-01-07", "2013-01-08"], utc=True),
        }
    )
    out = add_derived(frame, {"age": "year - built", "dow": "t.dt.dayofweek"})
    assert out["age"].iloc[0] == 13 and np.isnan(out["age"].iloc[1])
    assert out["dow"].tolist() == [0, 1]
    with pytest.raises(ConfigError, match=r"features\.derived\.bad"):
        add_derived(frame, {"bad": "no_such_column * 2"})


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [(">=", 15, [0, 1, 1]), ("<", 15, [1, 0, 0]), ("==", 20, [0, 0, 1]), ("in", [15, 20], [0, 1, 1])],
)
def test_label_rows_drops_unlabelled(op: str, value: object, expected: list[int]) -> None:
    frame = pd.DataFrame({"delay": [3.0, 15.0, 20.0, np.nan]})
    out, unlabelled = label_rows(frame, TargetConfig(column="delay", op=op, value=value, label="late"))
    assert unlabelled == 1
    assert out["late"].tolist() == expected


def _training_frame(periods: list[str], rows: int = 40) -> TrainingFrame:
    rng = np.random.default_rng(0)
    parts = []
    for period in periods:
        parts.append(
            pd.DataFrame(
                {
                    "x": rng.normal(size=rows),
                    "c": rng.choice(["u", "v"], rows),
                    "y": np.tile([0, 1], rows // 2),
                    "t": pd.Timestamp(f"{period}-01", tz="UTC") + pd.to_timedelta(np.arange(rows), "h"),
                    PERIOD_COLUMN: period,
                }
            )
        )
    return TrainingFrame(pd.concat(parts, ignore_index=True), periods, 0, "fp")


def test_time_split_never_trains_on_the_holdout_periods() -> None:
    features = FeaturesConfig(numeric=["x"], categorical=["c"])
    frame = _training_frame(["2013-01", "2013-02", "2013-03"])
    split = time_split(frame, features, "y", holdout_periods=1)
    assert split.train_periods == ["2013-01", "2013-02"] and split.holdout_periods == ["2013-03"]
    train_times = frame.frame.loc[split.X_train.index, "t"]
    holdout_times = frame.frame.loc[split.X_holdout.index, "t"]
    assert train_times.max() < holdout_times.min()
    assert list(split.X_train.columns) == ["x", "c"]


def test_time_split_needs_a_period_to_train_on() -> None:
    features = FeaturesConfig(numeric=["x"], categorical=["c"])
    with pytest.raises(ConfigError, match="nothing to train on"):
        time_split(_training_frame(["2013-01"]), features, "y", holdout_periods=1)


def test_time_split_needs_both_classes() -> None:
    features = FeaturesConfig(numeric=["x"], categorical=["c"])
    frame = _training_frame(["2013-01", "2013-02"])
    frame.frame["y"] = 0
    with pytest.raises(BadBatchError, match="both classes"):
        time_split(frame, features, "y", holdout_periods=1)


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_preprocessor_tolerates_unseen_categories_and_nulls(encoding: str) -> None:
    features = FeaturesConfig(numeric=["x"], categorical=["c"])
    train = pd.DataFrame({"x": [1.0, 2.0, np.nan] * 10, "c": ["u", "v", "u"] * 10})
    pre = build_preprocessor(features, encoding).fit(train)
    out = pre.transform(pd.DataFrame({"x": [np.nan], "c": ["never-seen"]}))
    assert out.shape[0] == 1
