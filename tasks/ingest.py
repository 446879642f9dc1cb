"""Landing → snapshot: read a file from the landing zone, prove it is a readable table,
and keep an immutable copy keyed by its content hash.

Ingesting the same bytes twice finds the snapshot already there and writes nothing.
A file that cannot be read as a table is quarantined with the reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath

import pandas as pd

from mlops.config import DataConfig
from mlops.errors import BadBatchError, LandingError
from mlops.storage import Store, sha256_bytes

READERS = {".parquet": "parquet", ".csv": "csv"}
PARQUET_MAGIC = b"PAR1"
# Text that states an instant unambiguously (an ISO 8601 date-time with "Z" or a UTC offset).
# CSV has no types: such a column is what a Parquet timestamp column becomes in a CSV export.
ISO_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})")
OTHER_DELIMITERS = (";", "\t", "|")
STATED_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$")


@dataclass(frozen=True)
class TimeColumn:
    """The column that places a row in time, and the zone its naive values are read in."""

    name: str
    timezone: str = "UTC"

    @classmethod
    def of(cls, data: DataConfig) -> TimeColumn:
        return cls(data.time_column, data.timezone)


@dataclass(frozen=True)
class Snapshot:
    """An immutable raw copy of one landing file, and what is known about it."""

    table: str
    period: str | None
    source_uri: str
    uri: str
    key: str
    sha256: str
    size: int
    rows: int
    format: str
    columns: list[str] = field(default_factory=list)
    ingested_at: str = ""

    @property
    def manifest_key(self) -> str:
        return f"{self.key}.json"


def find_landing_key(landing: Store, key: str) -> str:
    """The configured key, or the one file beside it with the same stem and another type."""
    if landing.exists(key):
        return key
    path = PurePosixPath(key)
    # Listing is recursive and S3 prefixes match partial names, so keep same-folder files only;
    # a top-level key lists from the root ("." is not a prefix S3 knows).
    prefix = "" if str(path.parent) == "." else f"{path.parent}/"
    siblings = [
        k
        for k in landing.list(prefix)
        if PurePosixPath(k).parent == path.parent and PurePosixPath(k).stem == path.stem
    ]
    if len(siblings) == 1:
        return siblings[0]
    if siblings:
        raise LandingError(
            f"no landing file {landing.uri_for(key)}, and {len(siblings)} files share its name: "
            f"{siblings}; keep one"
        )
    raise LandingError(
        f"no landing file {landing.uri_for(key)} (run `mlops seed`, or check data.landing_uri)"
    )


def read_table(data: bytes, name: str, times: TimeColumn | None = None) -> pd.DataFrame:
    """Parse bytes as a table, by the name's extension. Raises BadBatchError on any defect.

    With `times`, that column (where the table has it) is normalised to UTC instants: the
    one place a batch's times are read, so validation, features and monitoring agree."""
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in READERS:
        raise BadBatchError(
            f"{name}: unknown file type {suffix or '(none)'!r}; expected one of {sorted(READERS)}"
        )
    if not data:
        raise BadBatchError(f"{name}: file is empty (0 bytes)")
    if suffix == ".parquet":
        if not (data.startswith(PARQUET_MAGIC) and data.endswith(PARQUET_MAGIC)):
            raise BadBatchError(
                f"{name}: not a complete Parquet file (truncated or corrupt: missing PAR1 marker)"
            )
        try:
            frame = pd.read_parquet(io.BytesIO(data))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise BadBatchError(f"{name}: Parquet file is corrupt ({type(exc).__name__}: {exc})") from None
    else:
        frame = _read_csv(data, name)
    if frame.empty:
        raise BadBatchError(f"{name}: table has no rows")
    if times is not None and times.name in frame.columns:
        frame[times.name] = normalise_times(frame[times.name], times, name)
    return frame


def normalise_times(values: pd.Series, times: TimeColumn, name: str) -> pd.Series:
    """A timestamp (tz-aware or naive), a date, or ISO text ('2012-01-01', '2024-01',
    '2012-01-01T10:00:00Z') as UTC instants; naive ones are read in `times.timezone`."""
    where = f"{name}: time column {times.name!r}"
    present = values.dropna()
    if present.empty:
        raise BadBatchError(
            f"{where} is empty in all {len(values)} rows: every row needs a time to place it in a period"
        )
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values if str(values.dt.tz) == "UTC" else values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return _localise(values, times, where)
    if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
        raise BadBatchError(
            f"{where} holds {values.dtype} values, not times (e.g. {_examples(present)}):"
            " write timestamps, dates or ISO 8601 text"
        )
    if pd.api.types.infer_dtype(present, skipna=True) == "string":  # one C pass, not a lambda per value
        offsets = present.str.contains(STATED_OFFSET)
        if offsets.any() and not offsets.all():
            raise BadBatchError(
                f"{where} mixes times with a UTC offset ({_examples(present[offsets])}) and without"
                f" ({_examples(present[~offsets])}): write them all one way"
            )
        parsed = pd.to_datetime(values, format="ISO8601", utc=bool(offsets.all()), errors="coerce")
    else:  # dates, datetimes, or a mix of objects
        try:
            parsed = pd.to_datetime(values, errors="coerce", utc=False)
        except (ValueError, TypeError):  # aware and naive objects, or several zones, in one column
            parsed = pd.to_datetime(values, errors="coerce", utc=True)
    unread = parsed.isna() & values.notna()
    if unread.any():
        raise BadBatchError(
            f"{where}: {int(unread.sum())} of {len(values)} values cannot be read as times"
            f" (e.g. {_examples(values[unread])}); write timestamps, dates or ISO 8601 text"
        )
    if isinstance(parsed.dtype, pd.DatetimeTZDtype):
        return parsed.dt.tz_convert("UTC")
    return _localise(parsed, times, where)


def _localise(values: pd.Series, times: TimeColumn, where: str) -> pd.Series:
    try:
        # A clock time that a DST change repeats is read as standard time, one it skips as the
        # first valid instant after: a rule, so every run reads the same file the same way.
        local = values.dt.tz_localize(times.timezone, ambiguous=False, nonexistent="shift_forward")
        return local.dt.tz_convert("UTC")
    except (ValueError, OverflowError) as exc:
        raise BadBatchError(
            f"{where}: naive times cannot be read in data.timezone {times.timezone} ({exc});"
            " write them with a UTC offset"
        ) from None


def _examples(values: pd.Series, count: int = 3) -> str:
    return ", ".join(repr(v) for v in values.drop_duplicates().head(count).tolist())


def _read_csv(data: bytes, name: str) -> pd.DataFrame:
    try:
        # utf-8-sig: a spreadsheet's byte-order mark must not end up in the first column's name
        frame = pd.read_csv(io.BytesIO(data), encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadBatchError(f"{name}: CSV is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise BadBatchError(f"{name}: CSV cannot be parsed ({exc})") from None
    if len(frame.columns) == 1:
        header = str(frame.columns[0])
        used = [d for d in OTHER_DELIMITERS if d in header]
        if used:
            raise BadBatchError(
                f"{name}: CSV has a single column {header[:60]!r}: its fields look separated by"
                f" {used[0]!r}; write it comma-separated"
            )
    for column in frame.select_dtypes(include="object").columns:
        values = frame[column].dropna()
        if not (len(values) and isinstance(values.iloc[0], str) and ISO_INSTANT.fullmatch(values.iloc[0])):
            continue  # the first value decides cheaply for the usual text columns
        if values.map(lambda v: isinstance(v, str) and bool(ISO_INSTANT.fullmatch(v))).all():
            # e.g. month 13: left as text, for validation to name the column
            with contextlib.suppress(ValueError, OverflowError):
                frame[column] = pd.to_datetime(frame[column], utc=True, format="ISO8601")
    return frame


def snapshot_file(
    landing: Store,
    snapshots: Store,
    table: str,
    period: str | None,
    key: str,
    times: TimeColumn | None = None,
) -> tuple[Snapshot, pd.DataFrame]:
    """Copy one landing file into the snapshot store (once per content) and parse it."""
    key = find_landing_key(landing, key)
    data = landing.read_bytes(key)
    source_uri = landing.uri_for(key)
    frame = read_table(data, source_uri, times)
    digest = sha256_bytes(data)
    suffix = PurePosixPath(key).suffix.lower()
    snapshot_key = f"{table}/{digest}{suffix}"
    snapshot = Snapshot(
        table=table,
        period=period,
        source_uri=source_uri,
        uri=snapshots.uri_for(snapshot_key),
        key=snapshot_key,
        sha256=digest,
        size=len(data),
        rows=len(frame),
        format=READERS[suffix],
        columns=[str(c) for c in frame.columns],
        ingested_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if snapshots.exists(snapshot.manifest_key):
        return load_snapshot_manifest(snapshots, snapshot.manifest_key), frame
    # Data first, manifest last: a snapshot counts as complete only once its manifest exists.
    snapshots.write_bytes(snapshot_key, data)
    snapshots.write_bytes(snapshot.manifest_key, json.dumps(asdict(snapshot), indent=2).encode())
    return snapshot, frame


def load_snapshot_manifest(snapshots: Store, manifest_key: str) -> Snapshot:
    return Snapshot(**json.loads(snapshots.read_bytes(manifest_key)))


def read_snapshot(
    snapshots: Store, snapshot: Snapshot, verify: bool = True, times: TimeColumn | None = None
) -> pd.DataFrame:
    """Load a snapshot's table, refusing one whose bytes no longer match its hash."""
    data = snapshots.read_bytes(snapshot.key)
    if verify and sha256_bytes(data) != snapshot.sha256:
        raise LandingError(
            f"snapshot {snapshot.uri} was modified: its sha256 no longer matches {snapshot.sha256}"
        )
    return read_table(data, snapshot.uri, times)


def quarantine_batch(
    quarantine: Store,
    table: str,
    period: str | None,
    name: str,
    data: bytes,
    reason: str,
    details: dict | None = None,
) -> str:
    """Keep a rejected file, with why, where an operator can inspect it. Returns its URI."""
    folder = f"{table}/{period or 'static'}/{sha256_bytes(data)[:16]}"
    uri = quarantine.write_bytes(f"{folder}/{PurePosixPath(name).name}", data)
    record = {
        "table": table,
        "period": period,
        "file": name,
        "reason": reason,
        "quarantined_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **({"details": details} if details else {}),
    }
    quarantine.write_bytes(f"{folder}/reason.json", json.dumps(record, indent=2, default=str).encode())
    return uri


def ingest_file(
    landing: Store,
    snapshots: Store,
    quarantine: Store,
    table: str,
    period: str | None,
    key: str,
    times: TimeColumn | None = None,
) -> tuple[Snapshot, pd.DataFrame]:
    """Snapshot one landing file; quarantine it if it is not a readable table."""
    try:
        return snapshot_file(landing, snapshots, table, period, key, times)
    except BadBatchError as exc:
        real_key = find_landing_key(landing, key)
        uri = quarantine_batch(quarantine, table, period, real_key, landing.read_bytes(real_key), str(exc))
        raise BadBatchError(str(exc), quarantine_uri=uri) from None


def snapshot_tables(
    data: DataConfig, landing: Store, snapshots: Store, tables: list[str]
) -> dict[str, tuple[Snapshot, pd.DataFrame]]:
    """The current landing file of each of these (unpartitioned) tables, snapshotted (once per
    content) and read: the fresh dimensions a served model can look records up in."""
    times = TimeColumn.of(data)
    return {
        table: snapshot_file(landing, snapshots, table, None, data.tables[table].key(), times)
        for table in tables
    }
