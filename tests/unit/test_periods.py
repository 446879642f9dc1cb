"""Period arithmetic of each cadence (mlops.periods): the forms, the calendar's edges (ISO
week 53, leap days, the year boundary), and that every form sorts as it counts."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from itertools import pairwise

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlops.errors import ConfigError
from mlops.periods import ANY_PERIOD_PATTERN, Periods

DAYS, WEEKS, MONTHS = Periods("day"), Periods("week"), Periods("month")


def test_each_cadence_writes_a_day_in_its_form() -> None:
    day = date(2013, 7, 4)
    assert (DAYS.label(day), WEEKS.label(day), MONTHS.label(day)) == ("2013-07-04", "2013-W27", "2013-07")


@pytest.mark.parametrize(
    ("periods", "bad"),
    [
        (MONTHS, "2013-13"),
        (MONTHS, "2013-00"),
        (MONTHS, "13-01"),
        (MONTHS, "2013-1"),
        (MONTHS, "2013/01"),
        (MONTHS, ""),
        (MONTHS, "2013-07-04"),  # a day where months are expected
        (DAYS, "2013-07"),
        (DAYS, "2013-7-4"),
        (WEEKS, "2013-27"),
        (WEEKS, "2013-W7"),
        (WEEKS, "2013-W54"),
    ],
)
def test_a_period_of_the_wrong_form_names_the_form_expected(periods: Periods, bad: str) -> None:
    with pytest.raises(ConfigError) as info:
        periods.range(bad, bad)
    assert repr(bad) in str(info.value) and periods.form in str(info.value)


@pytest.mark.parametrize(
    ("periods", "missing"), [(DAYS, "2013-02-29"), (DAYS, "2013-04-31"), (WEEKS, "2013-W53")]
)
def test_a_period_the_calendar_does_not_have_is_refused(periods: Periods, missing: str) -> None:
    with pytest.raises(ConfigError, match="does not exist in the calendar"):
        periods.require(missing)


def test_iso_week_53_and_the_year_boundary() -> None:
    # 2020 has 53 ISO weeks, 2021 has 52; ISO week 1 of 2015 begins on 2014-12-29.
    assert WEEKS.range("2020-W52", "2021-W02") == ["2020-W52", "2020-W53", "2021-W01", "2021-W02"]
    assert WEEKS.next("2021-W52") == "2022-W01"
    assert WEEKS.start("2015-W01") == datetime(2014, 12, 29)
    assert WEEKS.label(date(2014, 12, 29)) == "2015-W01" and WEEKS.label(date(2016, 1, 3)) == "2015-W53"
    assert MONTHS.shift("2013-01", -1) == "2012-12" and MONTHS.shift("2013-12", 2) == "2014-02"
    assert DAYS.range("2013-12-30", "2014-01-02") == ["2013-12-30", "2013-12-31", "2014-01-01", "2014-01-02"]


def test_leap_days() -> None:
    assert DAYS.range("2024-02-28", "2024-03-01") == ["2024-02-28", "2024-02-29", "2024-03-01"]
    assert DAYS.next("2023-02-28") == "2023-03-01"
    assert MONTHS.end("2024-02") - MONTHS.start("2024-02") == timedelta(days=29)
    assert MONTHS.end("2023-02") - MONTHS.start("2023-02") == timedelta(days=28)


def test_a_reversed_range_is_refused() -> None:
    for periods, first, last in ((MONTHS, "2013-06", "2013-01"), (DAYS, "2013-01-02", "2013-01-01")):
        with pytest.raises(ConfigError, match="after"):
            periods.range(first, last)


def test_the_column_form_agrees_with_the_one_day_form() -> None:
    days = pd.Series(pd.date_range("2012-12-24", "2021-01-10", freq="37h"))
    for periods in (DAYS, WEEKS, MONTHS):
        assert periods.labels(days).tolist() == [periods.label(d.date()) for d in days]


days = st.dates(date(1950, 1, 1), date(2100, 12, 31))


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(first=days, last=days, cadence=st.sampled_from(["day", "week", "month"]))
def test_a_range_holds_each_period_once_in_order_and_each_day_in_one(
    first: date, last: date, cadence: str
) -> None:
    periods = Periods(cadence)  # type: ignore[arg-type]
    if (last - first).days > 900 and cadence == "day":
        last = first + timedelta(days=900)  # bounded: a few seconds in all
    start, end = sorted((periods.label(first), periods.label(last)))
    listed = periods.range(start, end)
    assert listed[0] == start and listed[-1] == end
    assert listed == sorted(set(listed))  # the form sorts as it counts
    assert all(periods.next(a) == b for a, b in pairwise(listed))
    assert all(periods.shift(b, -1) == a for a, b in pairwise(listed))
    # periods tile time: each one ends where the next begins, and a day lies in the one it names
    assert all(periods.end(a) == periods.start(b) for a, b in pairwise(listed))
    begins = periods.start(start)
    assert (
        periods.label(begins.date()) == start
        and periods.label((periods.end(start) - timedelta(days=1)).date()) == start
    )


@settings(max_examples=200, derandomize=True, database=None)
@given(text=st.text(max_size=12))
def test_any_text_is_a_period_of_the_right_form_or_a_named_error(text: str) -> None:
    for periods in (DAYS, WEEKS, MONTHS):
        try:
            assert periods.range(text, text) == [text]
        except ConfigError as exc:
            assert repr(text) in str(exc)
        else:
            assert re.match(ANY_PERIOD_PATTERN, text)
