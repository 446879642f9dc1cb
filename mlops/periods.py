"""Batch periods: how one landing file's period is written ('2013-07') and the arithmetic on
them. The one place that knows the form, so every command, schedule and window agrees."""

from __future__ import annotations

import re
from datetime import datetime

from mlops.errors import ConfigError

PERIOD_BODY = r"\d{4}-(?:0[1-9]|1[0-2])"  # unanchored, to find periods inside file names
PERIOD_PATTERN = rf"^{PERIOD_BODY}$"  # also the run forms' `pattern=` in the Prefect UI
PERIOD_RE = re.compile(PERIOD_PATTERN)
PERIOD_FORM = "YYYY-MM"


def require_period(value: str) -> str:
    if not PERIOD_RE.match(value):
        raise ConfigError(f"period {value!r} is not of the form {PERIOD_FORM}")
    return value


def shift_period(period: str, steps: int) -> str:
    """'2013-03' shifted by -2 is '2013-01'."""
    year, month = map(int, require_period(period).split("-"))
    index = year * 12 + month - 1 + steps
    return f"{index // 12:04d}-{index % 12 + 1:02d}"


def next_period(period: str) -> str:
    return shift_period(period, 1)


def period_start(period: str) -> datetime:
    """When a period begins (naive, like the dates in a period's name)."""
    year, month = map(int, require_period(period).split("-"))
    return datetime(year, month, 1)


def period_range(start: str, end: str) -> list[str]:
    """Periods from start to end inclusive."""
    require_period(start)
    require_period(end)
    if start > end:  # the form sorts as it counts
        raise ConfigError(f"start period {start} is after end period {end}")
    periods = [start]
    while periods[-1] != end:
        periods.append(next_period(periods[-1]))
    return periods
