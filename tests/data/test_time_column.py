"""The time column as users land it: tz-aware or naive timestamps, dates, or ISO text, in
Parquet and CSV. Ingest normalises it once to UTC instants (naive ones read in
data.timezone); the period check runs on that; the landed bytes and their snapshot stay as
they were. A column that cannot be read as times is quarantined, naming the file, the column
and example values."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import BadBatchError
from mlops.periods import Periods
from mlops.storage import LocalStore, sha256_bytes
from tasks.ingest import TimeColumn, ingest_file
from tasks.validate import validate_frame

NEW_YORK = "America/New_York"
NO_CHECKS = {"name": "times", "expectations": []}  # only the period check the cadence adds


def landed(tmp_path: Path, frame: pd.DataFrame, suffix: str) -> tuple[tuple[LocalStore, ...], str, bytes]:
    stores = tuple(LocalStore(tmp_path / name) for name in ("landing", "snapshots", "quarantine"))
    key = f"credit/2024-01{suffix}"
    buffer = io.BytesIO()
    if suffix == ".csv":
        frame.to_csv(buffer, index=False)
    else:
        frame.to_parquet(buffer, index=False)
    stores[0].write_bytes(key, buffer.getvalue())
    return stores, key, buffer.getvalue()


CASES = {
    # what lands: (column values, file type, zone naive values are read in) -> the UTC instants
    "aware UTC timestamps": (
        pd.to_datetime(["2024-01-05 10:00", "2024-01-31 23:00"], utc=True),
        ".parquet",
        "UTC",
    ),
    "aware New York timestamps": (
        pd.to_datetime(["2024-01-05 05:00", "2024-01-31 18:00"]).tz_localize(NEW_YORK),
        ".parquet",
        "UTC",
    ),
    "naive timestamps": (pd.to_datetime(["2024-01-05 05:00", "2024-01-31 18:00"]), ".parquet", NEW_YORK),
    "dates": ([dt.date(2024, 1, 5), dt.date(2024, 1, 31)], ".parquet", "UTC"),
    "month text": (["2024-01", "2024-01"], ".parquet", "UTC"),
    "date text in CSV": (["2024-01-05", "2024-01-31"], ".csv", NEW_YORK),
    "instants with Z in CSV": (["2024-01-05T10:00:00Z", "2024-01-31T23:00:00Z"], ".csv", "UTC"),
    "instants with offsets in CSV": (
        ["2024-01-05T05:00:00-05:00", "2024-01-31T18:00:00-05:00"],
        ".csv",
        "UTC",
    ),
}
EXPECTED = {
    "aware UTC timestamps": ["2024-01-05 10:00", "2024-01-31 23:00"],
    "aware New York timestamps": ["2024-01-05 10:00", "2024-01-31 23:00"],
    "naive timestamps": ["2024-01-05 10:00", "2024-01-31 23:00"],
    "dates": ["2024-01-05 00:00", "2024-01-31 00:00"],
    "month text": ["2024-01-01 00:00", "2024-01-01 00:00"],
    "date text in CSV": ["2024-01-05 05:00", "2024-01-31 05:00"],
    "instants with Z in CSV": ["2024-01-05 10:00", "2024-01-31 23:00"],
    "instants with offsets in CSV": ["2024-01-05 10:00", "2024-01-31 23:00"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_form_of_time_is_read_as_utc_instants_and_its_bytes_are_kept(case: str, tmp_path: Path) -> None:
    values, suffix, zone = CASES[case]
    frame = pd.DataFrame({"period": values, "amount": [120.0, 80.5]})
    stores, key, data = landed(tmp_path, frame, suffix)
    snapshot, read = ingest_file(*stores, "credit", "2024-01", key, TimeColumn("period", zone))

    assert str(read["period"].dtype) == "datetime64[ns, UTC]"
    assert list(read["period"]) == list(pd.to_datetime(EXPECTED[case], utc=True))
    # the landing file, its snapshot and the hash are the bytes as landed
    assert stores[0].read_bytes(key) == data
    assert stores[1].read_bytes(snapshot.key) == data and snapshot.sha256 == sha256_bytes(data)
    # and the period check holds it to January (the "2024-01" strings no longer trip GX)
    report = validate_frame(read, NO_CHECKS, "credit 2024-01", "period", "2024-01", Periods("month"), zone)
    assert report.success, report.summary()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ([None, None, None], r"time column 'period' is empty in all 3 rows"),
        (
            ["2024-01-05", "soon", "n/a", "later", "2024-01-07"],
            r"3 of 5 values cannot be read as times \(e\.g\. 'soon', 'n/a', 'later'\)",
        ),
        (
            [1704412800, 1704499200, 1704585600],
            r"holds int64 values, not times \(e\.g\. 1704412800, 1704499200, 1704585600\)",
        ),
        (["2024-01-05T10:00:00Z", "2024-01-06", "2024-01-07"], r"mixes times with a UTC offset"),
    ],
)
def test_a_column_that_is_not_times_is_quarantined_naming_file_column_and_values(
    values: list, message: str, tmp_path: Path
) -> None:
    frame = pd.DataFrame({"period": values, "amount": range(len(values))})
    stores, key, data = landed(tmp_path, frame, ".parquet")
    with pytest.raises(BadBatchError, match=message) as info:
        ingest_file(*stores, "credit", "2024-01", key, TimeColumn("period"))
    assert "credit/2024-01.parquet" in str(info.value)
    assert info.value.quarantine_uri is not None
    assert stores[0].read_bytes(key) == data  # nothing lost or changed in the landing zone
    assert not stores[1].list()  # and nothing snapshotted


def test_a_day_begins_at_midnight_in_data_timezone(tmp_path: Path) -> None:
    """New York's 4 July, as UTC instants: 04:00 UTC on the 4th to 03:59 UTC on the 5th."""
    times = pd.Series(pd.date_range("2013-07-04 00:00", "2013-07-04 23:00", freq="h", tz=NEW_YORK))
    frame = pd.DataFrame({"time_hour": times.dt.tz_convert("UTC"), "amount": 1.0})
    days = Periods("day")
    assert validate_frame(frame, NO_CHECKS, "day", "time_hour", "2013-07-04", days, NEW_YORK).success
    shifted = frame.assign(time_hour=frame["time_hour"] + pd.Timedelta(days=2))  # the wrong day's file
    report = validate_frame(shifted, NO_CHECKS, "day", "time_hour", "2013-07-04", days, NEW_YORK)
    assert not report.success
    assert "time_hour" in report.summary()
