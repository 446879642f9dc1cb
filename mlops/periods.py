"""Batch periods: what one landing file holds and how its period is written, by cadence —
a day ('2013-07-04'), an ISO week ('2013-W27') or a month ('2013-07') — and the arithmetic
on them. The one place that knows the forms, so every command, schedule and window agrees.

Each form sorts as it counts, so periods compare as strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Literal

import pandas as pd

from mlops.errors import ConfigError

Cadence = Literal["day", "week", "month"]

_BODIES: dict[str, str] = {  # unanchored, to find periods inside file names
    "day": r"\d{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])",
    "week": r"\d{4}-W(?:0[1-9]|[1-4]\d|5[0-3])",
    "month": r"\d{4}-(?:0[1-9]|1[0-2])",
}
_FORMS: dict[str, tuple[str, str]] = {  # how a period is written, and an example
    "day": ("YYYY-MM-DD", "2013-07-04"),
    "week": ("YYYY-Www (ISO week)", "2013-W27"),
    "month": ("YYYY-MM", "2013-07"),
}
# Any cadence's form: the run forms' `pattern=` in the Prefect UI, fixed before a config is
# read; the flow then checks the form of the config's cadence.
ANY_PERIOD_PATTERN = "^(?:" + "|".join(f"(?:{b})" for b in _BODIES.values()) + ")$"


@dataclass(frozen=True)
class Periods:
    """The periods of one cadence."""

    cadence: Cadence = "month"

    @property
    def body(self) -> str:
        return _BODIES[self.cadence]

    @property
    def form(self) -> str:
        return _FORMS[self.cadence][0]

    @property
    def example(self) -> str:
        return _FORMS[self.cadence][1]

    def require(self, value: str) -> str:
        """The period, or a ConfigError naming the form this cadence expects."""
        if not (isinstance(value, str) and re.fullmatch(self.body, value)):
            raise ConfigError(
                f"period {value!r} is not of the form {self.form} (e.g. {self.example}),"
                f" as data.cadence: {self.cadence} writes it"
            )
        try:
            self._first_day(value)
        except ValueError:  # 2013-02-30, or week 53 of a year with 52
            raise ConfigError(f"period {value!r} does not exist in the calendar") from None
        return value

    def _first_day(self, period: str) -> date:
        if self.cadence == "day":
            return date.fromisoformat(period)
        if self.cadence == "week":
            year, week = period.split("-W")
            return date.fromisocalendar(int(year), int(week), 1)
        year, month = period.split("-")
        return date(int(year), int(month), 1)

    def label(self, day: date) -> str:
        """The period a calendar day falls in."""
        if self.cadence == "day":
            return day.isoformat()
        if self.cadence == "week":
            year, week, _ = day.isocalendar()
            return f"{year:04d}-W{week:02d}"
        return f"{day.year:04d}-{day.month:02d}"

    def labels(self, days: pd.Series) -> pd.Series:
        """The period of each timestamp or date in a column (vectorised `label`)."""
        days = pd.to_datetime(days)
        if self.cadence == "day":
            return days.dt.strftime("%Y-%m-%d")
        if self.cadence == "week":
            iso = days.dt.isocalendar()
            return iso["year"].astype(str).str.zfill(4) + "-W" + iso["week"].astype(str).str.zfill(2)
        return days.dt.strftime("%Y-%m")

    def shift(self, period: str, steps: int) -> str:
        """'2013-03' shifted by -2 is '2013-01'; '2020-W53' by 1 is '2021-W01'."""
        first = self._first_day(self.require(period))
        if self.cadence == "day":
            return self.label(first + timedelta(days=steps))
        if self.cadence == "week":
            return self.label(first + timedelta(weeks=steps))
        index = first.year * 12 + first.month - 1 + steps
        return f"{index // 12:04d}-{index % 12 + 1:02d}"

    def next(self, period: str) -> str:
        return self.shift(period, 1)

    def start(self, period: str) -> datetime:
        """When a period begins (naive: read it in data.timezone)."""
        first = self._first_day(self.require(period))
        return datetime(first.year, first.month, first.day)

    def end(self, period: str) -> datetime:
        """When the next period begins (naive, exclusive)."""
        return self.start(self.next(period))

    def range(self, start: str, end: str) -> list[str]:
        """Periods from start to end inclusive."""
        self.require(start)
        self.require(end)
        if start > end:  # the form sorts as it counts
            raise ConfigError(f"start period {start} is after end period {end}")
        periods = [start]
        while periods[-1] != end:
            periods.append(self.next(periods[-1]))
        return periods


MONTHS = Periods("month")
