"""The prediction log: every score the service computes, as Parquet, local or on S3.

Layout: `<serving.prediction_log_uri>/date=YYYY-MM-DD/<uuid>.parquet` (the UTC date of
the request). Each file holds one flush of one server process, so several workers never
write the same file. Columns:

- every feature column, typed as in training (numeric float64, categorical string)
- `key`: the record's key when the client sent one (the join key for labels), else null
- `request_id`, `timestamp` (UTC, when the request arrived)
- `model_name`, `model_version`, `arm` (champion / challenger), `mode` (none / shadow /
  canary / ab), `served` (false for a shadow score: logged, never returned)
- `score` (probability of the positive class), `predicted_label` (0/1 at the training
  threshold: the service's answer, not the truth; true labels arrive later, see
  `serving.compare`, joined on `key`)

Requests only append to an in-memory buffer; a background thread writes it out every
`log_flush_seconds`, or sooner once `log_flush_rows` rows wait, and once more at shutdown.
A write that fails (an S3 outage) keeps the rows for the next attempt, up to a cap.
"""

from __future__ import annotations

import io
import logging
import re
import threading
import uuid
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mlops.storage import Store

logger = logging.getLogger("serving.predlog")
PARTITION_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/[^/]+\.parquet$")
META_COLUMNS = [
    "key",
    "request_id",
    "timestamp",
    "model_name",
    "model_version",
    "arm",
    "mode",
    "served",
    "score",
    "predicted_label",
]


def log_schema(numeric: Sequence[str], categorical: Sequence[str]) -> pa.Schema:
    fields = [pa.field(c, pa.float64()) for c in numeric]
    fields += [pa.field(c, pa.string()) for c in categorical]
    fields += [
        pa.field("key", pa.string()),
        pa.field("request_id", pa.string()),
        pa.field("timestamp", pa.timestamp("us", tz="UTC")),
        pa.field("model_name", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("arm", pa.string()),
        pa.field("mode", pa.string()),
        pa.field("served", pa.bool_()),
        pa.field("score", pa.float64()),
        pa.field("predicted_label", pa.int8()),
    ]
    return pa.schema(fields)


def log_batch(
    schema: pa.Schema,
    columns: dict[str, np.ndarray],
    keys: Sequence[str | None],
    request_ids: np.ndarray,
    timestamps: np.ndarray,
    model_name: str,
    model_version: str,
    arm: str,
    mode: str,
    served: bool,
    scores: np.ndarray,
    labels: np.ndarray,
) -> pa.RecordBatch:
    """One scored chunk as a record batch of the log's schema."""
    n = len(scores)
    arrays: list[pa.Array] = []
    for name in schema.names:
        if name in columns:
            # from_pandas: a NaN in an object column (a missing category) becomes a null.
            arrays.append(pa.array(columns[name], type=schema.field(name).type, from_pandas=True))
    arrays += [
        pa.array(keys, type=pa.string()),
        pa.array(request_ids, type=pa.string()),
        pa.array(timestamps, type=pa.timestamp("us", tz="UTC")),
        pa.repeat(pa.scalar(model_name, pa.string()), n),
        pa.repeat(pa.scalar(model_version, pa.string()), n),
        pa.repeat(pa.scalar(arm, pa.string()), n),
        pa.repeat(pa.scalar(mode, pa.string()), n),
        pa.repeat(pa.scalar(served, pa.bool_()), n),
        pa.array(scores, type=pa.float64()),
        pa.array(labels, type=pa.int8()),
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


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
                written = self._write(table)
            except Exception as exc:  # the store is down: keep the rows for the next flush
                self.last_error = f"{type(exc).__name__}: {exc}"
                logger.error("writing the prediction log failed, will retry: %s", exc)
                self._requeue(batches)
                return []
            self.last_error = None
            self.written_rows += table.num_rows
            self.written_files += len(written)
            return written

    def _write(self, table: pa.Table) -> list[str]:
        bounds = pc.min_max(table["timestamp"]).as_py()
        if bounds["min"].date() == bounds["max"].date():  # the usual case: no per-row work
            parts = [(bounds["min"].date().isoformat(), table)]
        else:
            days = pc.strftime(table["timestamp"], format="%Y-%m-%d")
            parts = [(day, table.filter(pc.equal(days, day))) for day in pc.unique(days).to_pylist()]
        written = []
        for day, part in parts:
            buffer = io.BytesIO()
            # The cheapest write measured: 2.4 ms per 20,000 rows against 7.3 ms with the
            # defaults (dictionaries, statistics, zstd), for files about twice the size. The
            # writer shares two cores with the requests, and partitions are by date anyway.
            pq.write_table(part, buffer, compression="lz4", use_dictionary=False, write_statistics=False)
            written.append(
                self.store.write_bytes(f"date={day}/{uuid.uuid4().hex}.parquet", buffer.getvalue())
            )
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


def log_files(store: Store, since: date | None = None, until: date | None = None) -> list[str]:
    """Keys of the log's files whose partition date is within [since, until]."""
    keys = []
    for key in store.list():
        match = PARTITION_RE.match(key)
        if match is None:
            continue
        day = date.fromisoformat(match.group(1))
        if (since is None or day >= since) and (until is None or day <= until):
            keys.append(key)
    return keys


def read_prediction_log(store: Store, since: date | None = None, until: date | None = None) -> pd.DataFrame:
    """The logged predictions of [since, until] (UTC dates) as one frame; empty if none."""
    tables = [pq.read_table(io.BytesIO(store.read_bytes(key))) for key in log_files(store, since, until)]
    if not tables:
        return pd.DataFrame(columns=META_COLUMNS)
    return pa.concat_tables(tables, promote_options="default").to_pandas()
