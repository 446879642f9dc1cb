"""Drift steps without servers: the verdict on constructed figures, the column checks that
keep Evidently away from columns it cannot assess, the shaping of a batch, lineage tags,
and real Evidently reports on small samples of real months."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from app.seed import load_source
from flows.ground_truth import label_served_traffic
from mlops.config import MonitoringConfig, ProjectConfig, TableSpec, load_config
from mlops.errors import ConfigError
from mlops.periods import Periods
from mlops.prediction_log import log_days, read_prediction_log
from mlops.storage import LocalStore
from tasks.drift import (
    CANNOT_JUDGE,
    DRIFT_RETRAIN,
    NO_DRIFT,
    PERFORMANCE_DROP_RETRAIN,
    SCORE,
    ColumnIssue,
    DriftFigures,
    Lineage,
    build_current_frame,
    dashboard,
    drift_scores,
    figures_from_snapshot,
    judge,
    landed_periods,
    monitored_columns,
    plan_columns,
    prediction_log_frame,
    retraining_window,
    run_report,
    sample_rows,
)
from tasks.features import build_training_frame
from tests.data.bad_inputs import stores_under

REPO = Path(__file__).resolve().parents[2]
SETTINGS = MonitoringConfig(key_features=["temp"], min_rows=100, drift_share=0.5, max_unassessable_share=0.5)


def figures(**overrides) -> DriftFigures:
    """Four assessed columns, none drifted, labelled and scored: a calm batch to vary."""
    base = dict(
        rows=1000,
        reference_rows=5000,
        monitored=["temp", "humid", "carrier", "dest"],
        column_scores={"temp": 0.05, "humid": 0.02, "carrier": 0.01, "dest": 0.03},
        column_thresholds={"temp": 0.1, "humid": 0.1, "carrier": 0.1, "dest": 0.1},
        unassessable=[],
        prediction_score=0.02,
        label_score=0.01,
        current_metrics={"roc_auc": 0.74},
        reference_metric=0.75,
    )
    return DriftFigures(**(base | overrides))


# -- the verdict ----------------------------------------------------------------------------


def test_a_calm_batch_is_no_drift_and_says_why() -> None:
    verdict = judge(figures(), SETTINGS)
    assert verdict.kind == NO_DRIFT and not verdict.retrain
    assert "0 of 4 columns drifted" in verdict.reasons[0]
    assert "ROC-AUC 0.7400" in verdict.reasons[1]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"rows": 0}, "no rows"),
        ({"rows": 10}, "10 rows: fewer than monitoring.min_rows=100"),
        ({"column_scores": {}, "column_thresholds": {}}, "no column could be assessed"),
        (
            {
                "column_scores": {"temp": 0.05},
                "column_thresholds": {"temp": 0.1},
                "unassessable": [
                    ColumnIssue("humid", "all 1000 values are null in the batch"),
                    ColumnIssue("carrier", "missing from the batch"),
                    ColumnIssue("dest", "missing from the batch"),
                ],
            },
            "3 of 4 columns could not be assessed",
        ),
    ],
)
def test_cannot_judge_names_the_reason(overrides: dict, needle: str) -> None:
    verdict = judge(figures(**overrides), SETTINGS)
    assert verdict.kind == CANNOT_JUDGE
    assert any(needle in reason for reason in verdict.reasons), verdict.reasons


def test_unassessable_columns_are_listed_even_below_the_limit() -> None:
    verdict = judge(
        figures(
            column_scores={"temp": 0.05, "humid": 0.02, "carrier": 0.01},
            unassessable=[ColumnIssue("dest", "missing from the batch")],
        ),
        SETTINGS,
    )
    assert verdict.kind == NO_DRIFT
    assert any("dest: missing from the batch" in r for r in verdict.reasons)


def test_a_key_feature_that_cannot_be_assessed_blocks_a_no_drift_verdict() -> None:
    verdict = judge(
        figures(
            column_scores={"humid": 0.02, "carrier": 0.01, "dest": 0.03},
            unassessable=[ColumnIssue("temp", "all 1000 values are null in the batch")],
        ),
        SETTINGS,
    )
    assert verdict.kind == CANNOT_JUDGE
    assert verdict.reasons == [
        "key feature temp could not be assessed: all 1000 values are null in the batch"
    ]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        (
            {"column_scores": {"temp": 0.05, "humid": 0.3, "carrier": 0.2, "dest": 0.03}},
            "2 of 4 columns drifted",
        ),
        (
            {"column_scores": {"temp": 0.4, "humid": 0.02, "carrier": 0.01, "dest": 0.03}},
            "key feature(s) drifted: temp",
        ),
        ({"prediction_score": 0.15}, "the champion's predictions drifted: 0.150 >= 0.1"),
        ({"label_score": 0.2}, "the label drifted: 0.200 >= 0.1"),
    ],
)
def test_each_kind_of_drift_calls_for_retraining(overrides: dict, needle: str) -> None:
    verdict = judge(figures(**overrides), SETTINGS)
    assert verdict.kind == DRIFT_RETRAIN and verdict.retrain
    assert any(needle in reason for reason in verdict.reasons), verdict.reasons


def test_a_performance_drop_outranks_drift_and_keeps_the_drift_reasons() -> None:
    verdict = judge(
        figures(
            current_metrics={"roc_auc": 0.70},
            column_scores={"temp": 0.4, "humid": 0.02, "carrier": 0.01, "dest": 0.03},
        ),
        SETTINGS,
    )
    assert verdict.kind == PERFORMANCE_DROP_RETRAIN
    assert verdict.reasons[0].startswith("ROC-AUC 0.7000 on the batch is 0.0500 below the champion's holdout")
    assert any("temp" in r for r in verdict.reasons[1:])


def test_a_drop_within_the_tolerance_is_not_a_performance_drop() -> None:
    assert judge(figures(current_metrics={"roc_auc": 0.725}), SETTINGS).kind == NO_DRIFT  # 0.025 < 0.03


def test_no_labels_means_no_performance_verdict() -> None:
    verdict = judge(figures(current_metrics={}, label_score=None), SETTINGS)
    assert verdict.kind == NO_DRIFT and len(verdict.reasons) == 1


def test_a_score_at_the_threshold_counts_as_drift_like_evidently() -> None:
    calm = figures(column_scores={"temp": 0.1, "humid": 0.02, "carrier": 0.01, "dest": 0.03})
    assert calm.drifted == ["temp"]  # Evidently: wasserstein/jensenshannon drift when score >= threshold


def test_figures_are_named_for_mlflow_charts() -> None:
    metrics = figures(column_scores={"temp": 0.4, "humid": 0.02, "carrier": 0.01, "dest": 0.03}).metrics()
    assert metrics["drift_share"] == 0.25 and metrics["n_drifted_columns"] == 1.0
    assert metrics["drift_temp"] == 0.4 and metrics["prediction_drift"] == 0.02
    assert metrics["current_roc_auc"] == 0.74 and metrics["roc_auc_drop"] == pytest.approx(0.01)
    assert all(isinstance(v, float) for v in metrics.values())


# -- column checks --------------------------------------------------------------------------


def test_plan_leaves_out_what_cannot_be_assessed_and_says_why() -> None:
    rng = np.random.default_rng(0)
    reference = pd.DataFrame(
        {
            "temp": rng.normal(40, 10, 300),
            "empty_ref": np.full(300, np.nan),
            "engines": np.full(300, 2.0),
            "humid": rng.normal(60, 10, 300),
            "carrier": rng.choice(["UA", "B6"], 300),
        }
    )
    current = reference.iloc[:100].copy()
    current["humid"] = np.nan
    current.loc[current.index[:30], "carrier"] = "ZZ"
    plan = plan_columns(
        reference,
        current,
        ["temp", "empty_ref", "engines", "humid", "gone"],
        ["carrier"],
        [ColumnIssue("gone", "missing from the batch")],
    )
    assert plan.numeric == ["temp"] and plan.categorical == ["carrier"]
    reasons = {i.column: i.reason for i in plan.issues}
    assert reasons == {
        "gone": "missing from the batch",
        "empty_ref": "all values are null in the reference",
        "engines": "constant in the reference (np.float64(2.0)): a distance has no scale (1 distinct value(s) in the batch)",
        "humid": "all 100 values are null in the batch",
    }
    assert plan.unseen == {"carrier": {"categories": ["ZZ"], "rows": 30, "share": 0.3}}


def test_monitored_columns_follow_the_config_and_refuse_unknown_names(config: ProjectConfig) -> None:
    numeric, categorical = monitored_columns(config)
    assert "month" not in numeric  # mlops.yaml excludes it: a new month is never in the reference
    assert categorical == config.features.categorical
    bad = config.model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"key_features": ["nope"]})}
    )
    with pytest.raises(ConfigError, match=r"monitoring.key_features: \['nope'\] are not features"):
        monitored_columns(bad)


# -- shaping a batch ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def config() -> ProjectConfig:
    return load_config(REPO / "mlops.yaml")


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    flights = load_source("flights")
    return {
        "jan": flights[flights.month == 1].sample(3000, random_state=0),
        "aug": flights[flights.month == 8].sample(3000, random_state=0),
        "weather": load_source("weather"),
        "planes": load_source("planes"),
    }


def dims(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {"weather": tables["weather"], "planes": tables["planes"]}


def test_a_good_batch_is_shaped_exactly_like_training_shapes_it(config, tables) -> None:
    expected = build_training_frame({"2013-08": tables["aug"]}, dims(tables), config, "x").frame
    current = build_current_frame(tables["aug"], dims(tables), config)
    assert current.issues == [] and current.labelled
    columns = [*config.features.columns, config.target.label]
    # Training sorts by time; the batch keeps its order: compare as sets of rows.
    left = expected[columns].sort_values(columns).reset_index(drop=True)
    right = current.frame[columns].sort_values(columns).reset_index(drop=True)
    pd.testing.assert_frame_equal(left, right, check_dtype=True)
    assert current.dropped_rows == len(tables["aug"]) - len(expected)


def test_a_broken_batch_still_yields_a_frame_naming_every_gap(config, tables) -> None:
    batch = tables["aug"].drop(columns=["dest", "tailnum", config.target.column])
    current = build_current_frame(batch, dims(tables), config)
    reasons = {i.column: i.reason for i in current.issues}
    assert reasons["dest"] == "missing from the batch"
    assert reasons["seats"] == "the batch lacks ['tailnum'] to join planes"
    assert reasons["plane_age"] == "cannot be derived: its input ['plane_year'] is missing"
    assert not current.labelled and len(current.frame) == len(batch)
    assert current.frame["seats"].isna().all() and current.frame["temp"].notna().any()
    assert any("no target column 'arr_delay'" in note for note in current.notes)


def test_a_month_whose_labels_have_not_landed_is_still_shaped(config, tables) -> None:
    current = build_current_frame(tables["aug"].assign(arr_delay=np.nan), dims(tables), config)
    assert not current.labelled and len(current.frame) == len(tables["aug"])
    assert config.target.label not in current.frame.columns
    assert current.notes == ["no 'arr_delay' value yet: no label drift and no quality figures"]


def test_values_that_are_not_numbers_become_missing_and_are_counted(config, tables) -> None:
    batch = tables["aug"].copy()
    batch["distance"] = batch["distance"].astype(object)
    batch.loc[batch.index[:7], "distance"] = "far"
    current = build_current_frame(batch, dims(tables), config)
    assert current.frame["distance"].dtype == "float64"
    assert any(note.startswith("distance: 7 value(s) are not numbers") for note in current.notes)


def test_prediction_log_keeps_served_labelled_rows(config, tables) -> None:
    frame = build_training_frame({"2013-08": tables["aug"]}, dims(tables), config, "x").frame.head(10)
    log = frame[config.features.columns].assign(
        score=0.3,
        label=[1, 0, None, 1, 0, 1, 0, 1, 0, 1],
        served=[True] * 8 + [False] * 2,
        model_version="3",
    )
    current = prediction_log_frame(log, config)
    assert len(current.frame) == 7 and current.labelled  # 8 served, one of them without a label
    assert current.frame[config.target.label].tolist() == [1, 0, 1, 0, 1, 0, 1]
    assert current.dropped_rows == 3
    assert any("model version(s) 3" in n for n in current.notes)


def test_prediction_log_is_read_by_day(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for day, rows in (("2026-01-01", 2), ("2026-01-02", 3), ("2026-01-05", 4)):
        buffer = pd.DataFrame({"x": range(rows)}).to_parquet()
        store.write_bytes(f"date={day}/part.parquet", buffer)
    assert len(read_prediction_log(store, date(2026, 1, 1), date(2026, 1, 2))) == 5
    assert read_prediction_log(store, date(2026, 1, 3), date(2026, 1, 4)).empty
    assert log_days(store, date(2026, 1, 2)) == [date(2026, 1, 2), date(2026, 1, 5)]
    with pytest.raises(ConfigError, match="before the first day"):
        label_served_traffic(
            load_config(REPO / "mlops.yaml"), stores_under(tmp_path), date(2026, 1, 2), date(2026, 1, 1)
        )


# -- lineage and months ---------------------------------------------------------------------


def test_lineage_reads_the_registration_tags() -> None:
    tags = {
        "snapshots": json.dumps({"flights/2013-02": "b", "flights/2013-01": "a", "weather/static": "w"}),
        "training_fingerprint": "f",
    }
    lineage = Lineage.from_tags(tags, "flights", "3")
    assert lineage.periods == ["2013-01", "2013-02"] and lineage.fingerprint == "f"
    with pytest.raises(ConfigError, match="version 3 has no readable `snapshots` tag"):
        Lineage.from_tags({"snapshots": "{not json"}, "flights", "3")
    with pytest.raises(ConfigError, match="names no flights month"):
        Lineage.from_tags({"snapshots": json.dumps({"weather/static": "w"})}, "flights", "3")


def test_months_in_the_landing_zone_and_the_retraining_window(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in (
        "flights/2013-01.parquet",
        "flights/2013-02.csv",
        "flights/2013-04.parquet",
        "flights/notes.txt",
        "weather.parquet",
    ):
        store.write_bytes(key, b"x")
    months = Periods("month")
    landed = landed_periods(store, TableSpec(path="flights/{period}.parquet"), months)
    assert landed == ["2013-01", "2013-02", "2013-04"]
    # The months just before the batch, without a gap: the batch itself stays unseen.
    assert retraining_window("2013-05", 6, landed, months) == ["2013-04"]
    assert retraining_window("2013-03", 6, landed, months) == ["2013-01", "2013-02"]
    assert retraining_window("2013-03", 1, landed, months) == ["2013-02"]


def test_days_and_weeks_in_the_landing_zone_and_their_window(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ("d/2013-12-30.parquet", "d/2013-12-31.csv", "d/2014-01-01.parquet", "d/2013-12.parquet"):
        store.write_bytes(key, b"x")
    for key in ("w/2020-W52.parquet", "w/2020-W53.parquet", "w/2021-W01.parquet"):
        store.write_bytes(key, b"x")
    days, weeks = Periods("day"), Periods("week")
    landed = landed_periods(store, TableSpec(path="d/{period}.parquet"), days)
    assert landed == ["2013-12-30", "2013-12-31", "2014-01-01"]  # the month file is another cadence's
    assert retraining_window("2014-01-02", 2, landed, days) == ["2013-12-31", "2014-01-01"]
    landed = landed_periods(store, TableSpec(path="w/{period}.parquet"), weeks)
    assert retraining_window("2021-W02", 6, landed, weeks) == ["2020-W52", "2020-W53", "2021-W01"]


def test_sampling_is_seeded_and_only_when_needed() -> None:
    frame = pd.DataFrame({"x": range(5000)})
    assert sample_rows(frame, None, 0) is frame and sample_rows(frame, 6000, 0) is frame
    a, b = sample_rows(frame, 1000, 7), sample_rows(frame, 1000, 7)
    assert len(a) == 1000 and a.equals(b) and a.index.is_monotonic_increasing


# -- real Evidently on real months ----------------------------------------------------------


def scored(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.assign(**{SCORE: np.clip(0.2 + 0.3 * frame["late"] + rng.normal(0, 0.2, len(frame)), 0, 1)})


def test_evidently_measures_real_drift_and_ignores_unassessable_columns(config, tables) -> None:
    settings = config.monitoring
    rng = np.random.default_rng(0)
    reference = scored(build_training_frame({"2013-01": tables["jan"]}, dims(tables), config, "r").frame, rng)
    current = scored(build_current_frame(tables["aug"], dims(tables), config).frame, rng)
    current["humid"] = np.nan  # Evidently alone would fail the whole report on this column
    numeric, categorical = monitored_columns(config)
    plan = plan_columns(reference, current, numeric, categorical, [])
    snapshot = run_report(reference, current, plan, settings, "late", "aug vs jan", {"batch": "aug"})
    figures_ = figures_from_snapshot(
        snapshot.dict(),
        plan,
        [*numeric, *categorical],
        settings,
        len(current),
        len(reference),
        "late",
        {},
        None,
    )
    assert "humid" not in figures_.column_scores
    assert figures_.unassessable == [ColumnIssue("humid", f"all {len(current)} values are null in the batch")]
    assert figures_.column_scores["temp"] > 2.0  # August against January: several reference deviations
    assert "temp" in figures_.drifted and "carrier" not in figures_.drifted
    assert set(drift_scores(snapshot.dict())) == {*plan.columns, SCORE, "late"}
    assert judge(figures_, settings).kind == DRIFT_RETRAIN


def test_the_dashboard_lists_each_panel_once() -> None:
    model = dashboard(["temp", "carrier"])
    ids = [panel for tab in model.tabs for panel in tab.panels]
    assert len(ids) == len(set(ids)) == len(model.panels) == 4
