"""The service's side of the prediction log: a bounded buffer the requests' log rows go
into, and a background thread that writes it out. The format (columns, partitions, how a
file is written and read) belongs to `mlops.prediction_log`.

Log rows are appended after the answer is sent, on the scoring's background thread; a
writer thread writes them out every `log_flush_seconds`, or sooner once `log_flush_rows`
rows wait, and once more at shutdown. A write that fails (an S3 outage) keeps the rows for
the next attempt.

The buffer holds at most `log_max_buffered_rows` rows, counting those being written, and
never drops one. When it is full (the store is down, or slower than the traffic) an append
waits for the writer to make room, and the service stops admitting requests: each waits up
to `log_full_wait_seconds` for room and is then refused with a 503. That is the
back-pressure; every wait and every refusal is counted in `describe()`.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pyarrow as pa

from mlops.prediction_log import write_partitions
from mlops.storage import Store

logger = logging.getLogger("serving.predlog")


class PredictionLogFull(Exception):
    """The log's buffer is full and the writer made no room in time: the request is refused."""


class PredictionLog:
    """A bounded buffer of record batches, written out to date partitions."""

    def __init__(
        self,
        store: Store,
        schema: pa.Schema,
        flush_rows: int,
        flush_seconds: float,
        max_buffered_rows: int = 1_000_000,
    ) -> None:
        self.store = store
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffered_rows = max(max_buffered_rows, flush_rows)
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0  # buffered, waiting for a flush
        self._writing = 0  # taken by the flush under way
        self._room = threading.Condition()  # guards the buffer; notified when rows are written
        self._write_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._draining = False  # shutting down: appends no longer wait for room
        self._thread: threading.Thread | None = None
        self.written_rows = 0
        self.written_files = 0
        self.full_waits = 0  # appends that found the buffer full and waited
        self.refused_requests = 0  # requests turned away because it stayed full
        self.last_error: str | None = None

    @property
    def pending_rows(self) -> int:
        """Rows not written yet: buffered, or in the flush under way."""
        return self._rows + self._writing

    @property
    def full(self) -> bool:
        return self.pending_rows >= self.max_buffered_rows

    def _has_room(self) -> bool:
        """(Under `_room`.) An append may go ahead: room, or shutting down."""
        return not self.full or self._draining

    def append(self, batch: pa.RecordBatch) -> None:
        """Buffer one batch; while the buffer is full, wait for the writer to make room."""
        with self._room:
            if not self._has_room():
                self.full_waits += 1
                self._wake.set()
                self._room.wait_for(self._has_room)
            self._batches.append(batch)
            self._rows += batch.num_rows
            due = self._rows >= self.flush_rows
        if due:
            self._wake.set()

    def wait_for_room(self, timeout: float) -> None:
        """Return once the buffer has room; raise `PredictionLogFull` after `timeout` seconds.
        The service calls this before it admits a request (on a worker thread)."""
        with self._room:
            if not self.full:
                return
            self._wake.set()
            if self._room.wait_for(self._has_room, timeout):
                return
            self.refused_requests += 1
        reason = f" (the last write failed: {self.last_error})" if self.last_error else ""
        raise PredictionLogFull(
            f"the prediction log at {self.store.uri} holds {self.pending_rows:,} unwritten rows,"
            f" its limit (serving.log_max_buffered_rows){reason}: retry once it has caught up"
        )

    def flush(self) -> list[str]:
        """Write what is buffered, one file per UTC date; returns the URIs written."""
        with self._write_lock:
            with self._room:
                batches, self._batches = self._batches, []
                self._writing, self._rows = self._rows, 0
            if not batches:
                return []
            table = pa.Table.from_batches(batches, schema=self.schema)
            try:
                written = write_partitions(self.store, table)
            except Exception as exc:  # the store is down: keep the rows for the next flush
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.error("writing the prediction log failed, will retry: %s", exc)
                with self._room:
                    self._batches = batches + self._batches
                    self._rows += self._writing
                    self._writing = 0
                return []
            with self._room:
                self._writing = 0
                self._room.notify_all()
            self.last_error = None
            self.written_rows += table.num_rows
            self.written_files += len(written)
            return written

    # -- the background writer ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def drain(self) -> None:
        """Shutting down: appends stop waiting for room, so the rows of requests already
        answered all reach the buffer and the last flush."""
        with self._room:
            self._draining = True
            self._room.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer and write what is left; rows that still cannot be written are
        named in the log, with their count."""
        self.drain()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()
        if self.pending_rows:
            logger.error(
                "%d prediction log rows could not be written to %s before shutdown: %s",
                self.pending_rows,
                self.store.uri,
                self.last_error,
            )

    def describe(self) -> dict[str, Any]:
        return {
            "uri": self.store.uri,
            "buffered_rows": self.pending_rows,
            "max_buffered_rows": self.max_buffered_rows,
            "written_rows": self.written_rows,
            "written_files": self.written_files,
            "full_waits": self.full_waits,
            "refused_requests": self.refused_requests,
            "last_error": self.last_error,
        }
