"""The prediction log: date partitions, types the monitoring flow can read, and no lost rows."""

from __future__ import annotations

import threading
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from mlops.prediction_log import log_batch, log_files, log_schema, read_prediction_log
from mlops.storage import LocalStore
from serving.predlog import PredictionLog, PredictionLogFull

NUMERIC, CATEGORICAL = ["distance", "temp"], ["carrier"]
SCHEMA = log_schema(NUMERIC, CATEGORICAL)


def micros(day: str, hour: int = 12) -> int:
    return int(datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").timestamp() * 1_000_000)


def batch(rows: int, day: str, arm: str = "champion", served: bool = True, start: int = 0) -> pa.RecordBatch:
    columns = {
        "distance": np.arange(start, start + rows, dtype=np.float64),
        "temp": np.where(np.arange(rows) % 2 == 0, np.nan, 20.0),
        "carrier": np.array(["UA" if i % 3 else np.nan for i in range(rows)], dtype=object),
    }
    scores = np.linspace(0, 1, rows)
    return log_batch(
        SCHEMA,
        columns,
        [f"k{start + i}" for i in range(rows)],
        np.array([f"req{start + i // 2}" for i in range(rows)], dtype=object),
        np.full(rows, micros(day), dtype="datetime64[us]"),
        "flight-delay",
        "3",
        arm,
        "shadow",
        served,
        scores,
        (scores >= 0.5).astype(np.int8),
    )


def test_flush_writes_one_file_per_utc_date_and_reads_back(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "predictions")
    log = PredictionLog(store, SCHEMA, flush_rows=10_000, flush_seconds=60)
    log.append(batch(5, "2026-03-01"))
    log.append(batch(4, "2026-03-02", arm="challenger", served=False, start=5))
    written = log.flush()
    assert len(written) == 2
    keys = log_files(store)
    assert [k.split("/")[0] for k in keys] == ["date=2026-03-01", "date=2026-03-02"]

    frame = read_prediction_log(store)
    assert len(frame) == 9
    assert frame["distance"].dtype == np.float64 and frame["score"].dtype == np.float64
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert frame["carrier"].isna().sum() == 4  # a missing category is a null, not the string "nan"
    by_arm = frame.groupby("arm")["served"].agg(["all", "any", "size"])
    assert by_arm.loc["champion", "all"] and by_arm.loc["champion", "size"] == 5
    assert not by_arm.loc["challenger", "any"]
    assert set(frame.columns) >= {"key", "request_id", "model_version", "mode", "predicted_label"}

    only_second = read_prediction_log(store, since=date(2026, 3, 2))
    assert len(only_second) == 4 and (only_second["arm"] == "challenger").all()
    assert log.flush() == []  # nothing buffered, nothing written


def test_background_writer_flushes_once_enough_rows_wait(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "predictions")
    log = PredictionLog(store, SCHEMA, flush_rows=10, flush_seconds=3600)
    log.start()
    try:
        log.append(batch(12, "2026-03-01"))
        deadline = time.monotonic() + 30
        while not log_files(store) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(read_prediction_log(store)) == 12
        log.append(batch(3, "2026-03-01", start=12))  # under the row threshold: waits for close
    finally:
        log.close()
    assert len(read_prediction_log(store)) == 15


def test_a_failed_write_keeps_the_rows_for_the_next_flush(tmp_path: Path) -> None:
    blocker = tmp_path / "predictions"
    blocker.write_text("a file where the log folder should be")
    store = LocalStore(blocker)
    log = PredictionLog(store, SCHEMA, flush_rows=10_000, flush_seconds=60)
    log.append(batch(6, "2026-03-01"))
    assert log.flush() == []
    assert log.last_error and log.describe()["buffered_rows"] == 6
    blocker.unlink()
    assert len(log.flush()) == 1
    assert log.last_error is None and len(read_prediction_log(store)) == 6


def test_a_full_buffer_holds_appends_and_refuses_admission_but_drops_nothing(tmp_path: Path) -> None:
    blocker = tmp_path / "predictions"
    blocker.write_text("not a folder")
    store = LocalStore(blocker)
    log = PredictionLog(store, SCHEMA, flush_rows=5, flush_seconds=60, max_buffered_rows=10)
    log.append(batch(5, "2026-03-01"))
    log.append(batch(5, "2026-03-01", start=5))
    assert log.flush() == [] and log.full and log.describe()["buffered_rows"] == 10

    # Admission waits for room, then refuses by name; the refusal is counted.
    with pytest.raises(PredictionLogFull, match="10 unwritten rows"):
        log.wait_for_room(0.2)
    assert log.refused_requests == 1

    # An append on a full buffer waits for the writer instead of dropping anything.
    appender = threading.Thread(target=log.append, args=(batch(5, "2026-03-01", start=10),))
    appender.start()
    appender.join(0.5)
    assert appender.is_alive() and log.full_waits == 1

    blocker.unlink()  # the store is back: the flush makes room and the append goes through
    assert len(log.flush()) == 1
    appender.join(10)
    assert not appender.is_alive()
    log.wait_for_room(0)  # room now: no refusal
    assert len(log.flush()) == 1
    assert sorted(read_prediction_log(store)["distance"]) == list(range(15))
    assert log.last_error is None and log.pending_rows == 0


def test_closing_lets_a_waiting_append_through(tmp_path: Path) -> None:
    """At shutdown an append never waits for room that will not come: its rows reach the
    last flush (or are named in the error log when that fails too)."""
    blocker = tmp_path / "predictions"
    blocker.write_text("not a folder")
    log = PredictionLog(LocalStore(blocker), SCHEMA, flush_rows=5, flush_seconds=60, max_buffered_rows=5)
    log.append(batch(5, "2026-03-01"))
    appender = threading.Thread(target=log.append, args=(batch(5, "2026-03-01", start=5),))
    appender.start()
    appender.join(0.3)
    assert appender.is_alive()
    log.drain()
    appender.join(10)
    assert not appender.is_alive() and log.pending_rows == 10


def test_empty_log_reads_as_an_empty_frame(tmp_path: Path) -> None:
    frame = read_prediction_log(LocalStore(tmp_path / "none"))
    assert frame.empty and "score" in frame.columns


@pytest.mark.parametrize("day", ["2026-12-31"])
def test_request_time_decides_the_partition(tmp_path: Path, day: str) -> None:
    store = LocalStore(tmp_path / "p")
    log = PredictionLog(store, SCHEMA, flush_rows=100, flush_seconds=60)
    log.append(batch(2, day))
    log.flush()
    assert log_files(store)[0].startswith(f"date={day}/")
    assert read_prediction_log(store)["timestamp"].iloc[0] == datetime.fromisoformat(
        f"{day}T12:00:00"
    ).replace(tzinfo=UTC)
