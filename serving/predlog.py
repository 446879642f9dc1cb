"""The service's side of the prediction log: a buffer the requests append to, and a
background thread that writes it out. The format (columns, partitions, how a file is
written and read) belongs to `mlops.prediction_log`.

Requests only append to an in-memory buffer; a background thread writes it out every
`log_flush_seconds`, or sooner once `log_flush_rows` rows wait, and once more at shutdown.
A write that fails (an S3 outage) keeps the rows for the next attempt, up to a cap.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import pyarrow as pa

from mlops.prediction_log import write_partitions
from mlops.storage import Store

logger = logging.getLogger("serving.predlog")


class PredictionLog:
    """An append-only buffer of record batches, written out to date partitions."""

    def __init__(
        self,
        store: Store,
        schema: pa.Schema,
        flush_rows: int,
        flush_seconds: float,
        max_buffered_rows: int = 2_000_000,
    ) -> None:
        self.store = store
        self.schema = schema
        self.flush_rows = flush_rows
        self.flush_seconds = flush_seconds
        self.max_buffered_rows = max(max_buffered_rows, flush_rows)
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._lock = threading.Lock()  # guards the buffer
        self._write_lock = threading.Lock()  # one flush at a time
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written_rows = 0
        self.written_files = 0
        self.dropped_rows = 0
        self.last_error: str | None = None

    def append(self, batch: pa.RecordBatch) -> None:
        with self._lock:
            self._batches.append(batch)
            self._rows += batch.num_rows
            full = self._rows >= self.flush_rows
        if full:
            self._wake.set()

    def flush(self) -> list[str]:
        """Write what is buffered, one file per UTC date; returns the URIs written."""
        with self._write_lock:
            with self._lock:
                batches, self._batches, self._rows = self._batches, [], 0
            if not batches:
                return []
            table = pa.Table.from_batches(batches, schema=self.schema)
            try:
                written = write_partitions(self.store, table)
            except Exception as exc:  # the store is down: keep the rows for the next flush
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.error("writing the prediction log failed, will retry: %s", exc)
                self._requeue(batches)
                return []
            self.last_error = None
            self.written_rows += table.num_rows
            self.written_files += len(written)
            return written

    def _requeue(self, batches: list[pa.RecordBatch]) -> None:
        with self._lock:
            self._batches = batches + self._batches
            self._rows = sum(b.num_rows for b in self._batches)
            while self._rows > self.max_buffered_rows and len(self._batches) > 1:
                dropped = self._batches.pop(0)
                self._rows -= dropped.num_rows
                self.dropped_rows += dropped.num_rows

    # -- the background writer ------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self.flush()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.flush()

    def describe(self) -> dict[str, Any]:
        return {
            "uri": self.store.uri,
            "buffered_rows": self._rows,
            "written_rows": self.written_rows,
            "written_files": self.written_files,
            "dropped_rows": self.dropped_rows,
            "last_error": self.last_error,
        }
