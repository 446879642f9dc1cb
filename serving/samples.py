"""Request records built from landed data, exactly as a client would send them.

The service takes feature columns, which for this project are partly joined (weather,
planes) and derived (day of week, plane age). `sample_records` does that preparation
with the training code's own functions, so the demo, the benchmark and the tests send
what a well-behaved client sends: features, nulls for missing values, and a `key`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from mlops.config import ProjectConfig
from mlops.prediction_log import frame_keys
from mlops.storage import Store
from serving.schema import KEY_FIELD


def feature_frame(config: ProjectConfig, landing: Store, period: str) -> pd.DataFrame:
    """One landed period's rows with the feature columns (typed as in training) and `key`."""
    from tasks.features import add_derived, join_tables
    from tasks.ingest import TimeColumn, read_table

    data = config.data

    def read(table: str, period: str | None = None) -> pd.DataFrame:
        key = data.tables[table].key(period)
        return read_table(landing.read_bytes(key), landing.uri_for(key), TimeColumn.of(data))

    batch = read(data.batch_table, period)
    dims = {join.table: read(join.table) for join in data.joins}
    frame = add_derived(join_tables(batch, dims, data.joins), config.features.derived)
    out = frame[config.features.columns].copy()
    out[config.features.numeric] = out[config.features.numeric].astype("float64")
    for column in config.features.categorical:
        out[column] = out[column].astype(object).where(out[column].notna(), np.nan)
    if data.key_columns:
        out[KEY_FIELD] = frame_keys(frame, data.key_columns).to_numpy()
    return out.reset_index(drop=True)


def to_records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-ready records: NaN becomes null (JSON has no NaN)."""
    records = frame.to_dict(orient="records")
    for record in records:
        for name, value in record.items():
            if isinstance(value, float) and math.isnan(value):
                record[name] = None
    return records


def to_dataframe_split(records: list[dict[str, Any]]) -> dict[str, Any]:
    """The same records as MLflow's `dataframe_split` JSON body."""
    columns = list(records[0])
    return {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}}


def to_arrow_stream(records: list[dict[str, Any]]) -> bytes:
    """The same records as an Apache Arrow IPC stream body."""
    import io

    import pyarrow as pa

    table = pa.Table.from_pylist(records)
    sink = io.BytesIO()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


def sample_records(
    config: ProjectConfig, landing: Store, period: str, rows: int | None = None, seed: int = 0
) -> list[dict[str, Any]]:
    """`rows` records (all when None) of a landed period, in a seeded random order."""
    frame = feature_frame(config, landing, period)
    if rows is not None:
        frame = frame.sample(n=min(rows, len(frame)), random_state=seed)
    return to_records(frame)
