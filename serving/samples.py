"""Request records built from landed data, exactly as a client would send them.

The service takes records as they land (`landed_frame`: the model joins and derives the
rest) and feature rows (`feature_frame`: for this project partly joined from weather and
planes and derived, by the model's own record step). Both give what a well-behaved client
sends: nulls for missing values, and a `key`.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from mlops.config import ProjectConfig
from mlops.prediction_log import frame_keys
from mlops.storage import Store
from serving.schema import KEY_FIELD


def _landed(
    config: ProjectConfig, landing: Store, period: str
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """A landed period of the batch table and the dimension tables, read as ingest reads them."""
    from tasks.ingest import TimeColumn, read_table

    data = config.data

    def read(table: str, period: str | None = None) -> pd.DataFrame:
        key = data.tables[table].key(period)
        return read_table(landing.read_bytes(key), landing.uri_for(key), TimeColumn.of(data))

    return read(data.batch_table, period), {join.table: read(join.table) for join in data.joins}


def landed_frame(config: ProjectConfig, landing: Store, period: str) -> pd.DataFrame:
    """One landed period's rows as they landed, with `key`: what a client of records as they
    land sends (times as ISO 8601 text, since JSON has no timestamps)."""
    batch, _ = _landed(config, landing, period)
    out = batch.drop(columns=[config.target.column], errors="ignore")  # a client has no label yet
    for column in out.columns:
        if isinstance(out[column].dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(out[column]):
            text = out[column].map(lambda t: t.isoformat() if pd.notna(t) else None)
            out[column] = text.astype(object)
    if config.data.key_columns:
        out[KEY_FIELD] = frame_keys(batch, config.data.key_columns).to_numpy()
    return out.reset_index(drop=True)


def feature_frame(config: ProjectConfig, landing: Store, period: str) -> pd.DataFrame:
    """One landed period's rows with the feature columns (typed as in training) and `key`:
    what a client that computes features itself sends, computed by the model's own step."""
    from tasks.features import record_features

    batch, dims = _landed(config, landing, period)
    out = record_features(config, dims, batch).features(batch)
    if config.data.key_columns:
        out[KEY_FIELD] = frame_keys(batch, config.data.key_columns).to_numpy()
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
    config: ProjectConfig,
    landing: Store,
    period: str,
    rows: int | None = None,
    seed: int = 0,
    landed: bool = False,
) -> list[dict[str, Any]]:
    """`rows` records (all when None) of a landed period, in a seeded random order: as they
    landed (`landed`) or as feature rows."""
    frame = (landed_frame if landed else feature_frame)(config, landing, period)
    if rows is not None:
        frame = frame.sample(n=min(rows, len(frame)), random_state=seed)
    return to_records(frame)
