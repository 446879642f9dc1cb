"""The model's first step: from a record as it lands to the feature columns it was trained on.

`RecordFeatures` is a scikit-learn transformer that ships inside every registered model,
ahead of the preprocessing and the estimator. Given rows of the batch table as they land
(for flights: carrier, origin, time_hour, tailnum, ...) it

1. types the columns it reads as they were in training (a time sent as ISO text becomes
   the timestamp it was, in the same zone);
2. looks each row up in the dimension tables (`data.joins`): the tables are copies of the
   snapshots the model was trained on, named by their content hash in `snapshots`, and a
   newer snapshot can replace them (`with_tables`) without retraining; a key a table
   lacks leaves that table's columns missing, exactly as the left join of training did;
3. computes `features.derived` through `mlops.expressions`, whose parser admits only an
   allowed set of operations: the model carries the expressions' text and nothing is
   ever handed to `eval`, so a model file can compute columns but can do nothing else;
4. returns the feature columns typed as training typed them (numbers as float64, a
   category as text with NaN for missing).

Training builds its feature frame through this same class, so there is one place where
features are computed. Rows that already hold every feature column and lack the raw ones
(a feature frame, as older clients send) pass through, only typed.

This module is the registered model's code dependency (`MODEL_CODE`): it imports numpy,
pandas, scikit-learn and the two project modules listed there, nothing else, so the
standard MLflow client loads the model with no other project code on its path.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from mlops.errors import BadBatchError, ConfigError
from mlops.expressions import Expression, ExpressionError, parse_expression

# The files of the `mlops` package a registered model ships as its code (MLflow `code_paths`).
MODEL_CODE = ("__init__.py", "errors.py", "expressions.py", "record_features.py")

NUMBER, TEXT, TIME, FLAG = "number", "text", "time", "flag"


def value_kind(values: pd.Series) -> str:
    """What a landed column holds, as the record contract names it."""
    if isinstance(values.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(values.dtype):
        return TIME
    if pd.api.types.is_bool_dtype(values.dtype):
        return FLAG
    if pd.api.types.is_numeric_dtype(values.dtype):
        return NUMBER
    return TEXT


def time_zone(values: pd.Series) -> str:
    """The zone of a time column ('' for naive times)."""
    return str(values.dt.tz) if isinstance(values.dtype, pd.DatetimeTZDtype) else ""


def pack_table(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """A table as plain arrays that skops stores without trusting pandas' internals:
    each column's values, times as UTC nanoseconds with their zone."""
    packed: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        values = frame[name]
        if value_kind(values) == TIME:
            zone = time_zone(values)
            utc = values.dt.tz_convert("UTC").dt.tz_localize(None) if zone else values
            packed[str(name)] = {"values": utc.to_numpy(dtype="datetime64[ns]"), "zone": zone}
        elif values.dtype == object or not isinstance(values.dtype, np.dtype):
            # Fixed-width text and a mask: an array of Python objects costs skops 50x the bytes.
            missing = values.isna().to_numpy()
            text = values.astype(object).where(~missing, "").astype(str).to_numpy(dtype=str)
            packed[str(name)] = {"values": text, "zone": "", "missing": missing}
        else:
            packed[str(name)] = {"values": values.to_numpy(), "zone": ""}
    return packed


def unpack_table(packed: dict[str, dict[str, Any]]) -> pd.DataFrame:
    columns: dict[str, Any] = {}
    for name, column in packed.items():
        values = pd.Series(column["values"])
        if "missing" in column:
            values = values.astype(object).where(~column["missing"], np.nan)
        elif column["zone"]:
            values = values.dt.tz_localize("UTC").dt.tz_convert(column["zone"])
        columns[name] = values
    return pd.DataFrame(columns)


def _key_values(values: Any) -> list[Any]:
    """A key column as hashable Python values: a time as its UTC nanoseconds, a missing value
    as None (so that missing matches missing, as in a pandas merge), 3 and 3.0 alike."""
    if isinstance(values, np.ndarray) and values.dtype == object:
        missing = pd.isna(values)
        keys = values.tolist()
        for i in np.flatnonzero(missing).tolist():
            keys[i] = None
        return keys
    series = values if isinstance(values, pd.Series) else pd.Series(values)
    missing = series.isna().to_numpy()
    if value_kind(series) == TIME:
        keys = series.array.asi8.tolist()
    else:
        keys = series.to_numpy(dtype=object).tolist()
    if missing.any():
        for i in np.flatnonzero(missing).tolist():
            keys[i] = None
    return keys


class Lookup:
    """One join's dimension table, indexed by its key once: each row's values from the
    table's first row for its key, as a left join gives them (no row dropped or reordered;
    a key the table lacks gives missing values).

    A dict of Python keys, not a pandas index: `get_indexer` costs 0.7 ms a call on the one
    row of a request (measured), the dict microseconds; 336,776 rows take 0.2 s either way."""

    def __init__(
        self, table: pd.DataFrame, match: dict[str, str], columns: dict[str, str], name: str
    ) -> None:
        needed = [*match.values(), *columns]
        missing = [c for c in needed if c not in table.columns]
        if missing:
            raise BadBatchError(f"table {name!r} lacks columns {missing} needed by the join")
        right = table[needed].reset_index(drop=True)
        keys = zip(*(_key_values(right[c]) for c in match.values()), strict=True)
        self.positions: dict[Any, int] = {}
        for position, key in enumerate(keys):
            self.positions.setdefault(key, position)  # the first row per key
        self.match = match
        self.values = {new: _values(right[old]) for old, new in columns.items()}

    def __call__(self, frame: Any) -> dict[str, Any]:
        keys = zip(*(_key_values(frame[c]) for c in self.match), strict=True)
        get = self.positions.get
        positions = np.fromiter(
            (get(k, -1) for k in keys), dtype=np.intp, count=len(frame[next(iter(self.match))])
        )
        return {
            new: pd.api.extensions.take(values, positions, allow_fill=True)
            for new, values in self.values.items()
        }


def _values(values: pd.Series) -> Any:
    """A column's array, for `take` with -1 as missing (NaN, NaT): the dtype a left join gives."""
    return values.array if isinstance(values.dtype, pd.api.extensions.ExtensionDtype) else values.to_numpy()


def derive(frame: pd.DataFrame, expressions: dict[str, Expression]) -> pd.DataFrame:
    """Each expression in order (one may read an earlier one's column)."""
    out = frame.copy()
    for name, expression in expressions.items():
        try:
            out[name] = expression(out)
        except Exception as exc:  # a column missing or of the wrong type (e.g. .dt on numbers)
            raise ConfigError(
                f"features.derived.{name}: cannot evaluate {expression.text!r} ({exc})"
            ) from None
    return out


class RecordFeatures(TransformerMixin, BaseEstimator):
    """Rows as they land → the model's feature columns (see the module docstring).

    Built by `RecordFeatures.build` at training, never fitted on labels: `fit` is a no-op.
    Every argument is plain data (lists, dicts, strings, numpy arrays), which is what lets
    skops save the step without trusting anything beyond this class."""

    def __init__(
        self,
        inputs: dict[str, str] | None = None,
        zones: dict[str, str] | None = None,
        landing: dict[str, str] | None = None,
        joins: list[dict[str, Any]] | None = None,
        tables: dict[str, dict[str, dict[str, Any]]] | None = None,
        snapshots: dict[str, str] | None = None,
        derived: dict[str, str] | None = None,
        numeric: list[str] | None = None,
        categorical: list[str] | None = None,
    ) -> None:
        self.inputs = inputs  # column the model reads -> its kind (number, text, time, flag)
        self.zones = zones  # time input -> its zone in training ('' for naive)
        self.landing = landing  # every column of the batch table as it landed -> its kind
        self.joins = joins  # {"table", "match": {batch: table column}, "columns": {table column: name}}
        self.tables = tables  # table -> packed columns (only those the joins read)
        self.snapshots = snapshots  # table -> content hash of the snapshot its rows came from
        self.derived = derived  # new column -> expression text
        self.numeric = numeric
        self.categorical = categorical

    # -- building it at training ---------------------------------------------------------
    @classmethod
    def build(
        cls,
        batch: pd.DataFrame,
        dims: dict[str, pd.DataFrame],
        joins: list[dict[str, Any]],
        derived: dict[str, str],
        numeric: list[str],
        categorical: list[str],
        snapshots: dict[str, str] | None = None,
    ) -> RecordFeatures:
        """The step for batches shaped like `batch`, joined to `dims` as `joins` say. Only the
        derivations and joins the features need are kept, so a record must carry only what
        they read (never, say, the target)."""
        needed = {*numeric, *categorical}
        kept_derived: dict[str, str] = {}
        for name, text in reversed(list(derived.items())):
            if name in needed:
                kept_derived[name] = text
                needed |= set(parse_expression(text).columns)
        derived = dict(reversed(list(kept_derived.items())))
        joins = [j for j in joins if needed & set(j["columns"].values())]
        for join in joins:
            overlap = set(join["columns"].values()) & set(batch.columns)
            if overlap:
                raise ConfigError(
                    f"joins.{join['table']}: columns {sorted(overlap)} already exist; rename them"
                )
        produced: set[str] = set()
        reads: list[str] = []
        for join in joins:
            reads += [c for c in join["match"] if c not in produced]
            produced |= set(join["columns"].values())
        for name, text in derived.items():
            reads += [c for c in parse_expression(text).columns if c not in produced]
            produced.add(name)
        reads += [c for c in [*numeric, *categorical] if c not in produced]
        reads = list(dict.fromkeys(reads))
        lacking = [c for c in reads if c not in batch.columns]
        if lacking:
            raise BadBatchError(
                f"the batch lacks columns {lacking} that the joins, derived features or features read"
            )
        tables: dict[str, dict[str, dict[str, Any]]] = {}
        for join in joins:
            table = dims[join["table"]]
            needed = [*join["match"].values(), *join["columns"]]
            missing = [c for c in needed if c not in table.columns]
            if missing:
                raise BadBatchError(f"table {join['table']!r} lacks columns {missing} needed by the join")
            kept = set(tables.get(join["table"], {})) | set(needed)
            tables[join["table"]] = pack_table(table[[c for c in table.columns if c in kept]])
        return cls(
            inputs={c: value_kind(batch[c]) for c in reads},
            zones={c: time_zone(batch[c]) for c in reads if value_kind(batch[c]) == TIME},
            landing={str(c): value_kind(batch[c]) for c in batch.columns},
            joins=[
                {"table": j["table"], "match": dict(j["match"]), "columns": dict(j["columns"])} for j in joins
            ],
            tables=tables,
            snapshots=dict(snapshots or {}),
            derived=dict(derived),
            numeric=list(numeric),
            categorical=list(categorical),
        )

    def with_tables(self, dims: dict[str, pd.DataFrame], snapshots: dict[str, str]) -> RecordFeatures:
        """The same step looking up newer snapshots of its tables (e.g. today's weather)."""
        tables = {}
        for name, packed in (self.tables or {}).items():
            frame = dims[name]
            missing = [c for c in packed if c not in frame.columns]
            if missing:
                raise BadBatchError(f"the snapshot of {name!r} lacks columns {missing} the model looks up")
            tables[name] = pack_table(frame[list(packed)])
        params = self.get_params() | {"tables": tables, "snapshots": {**(self.snapshots or {}), **snapshots}}
        return type(self)(**params)

    # -- scikit-learn ----------------------------------------------------------------------
    def fit(self, X: pd.DataFrame, y: Any = None) -> RecordFeatures:
        return self

    def transform(self, X: pd.DataFrame) -> pd.DataFrame:
        return self.features(X)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        return np.asarray(self.columns, dtype=object)

    def set_params(self, **params: Any) -> RecordFeatures:
        self.__dict__.pop("_cache", None)  # built from the old parameters
        return super().set_params(**params)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state.pop("_cache", None)  # rebuilt on first use; never part of the model file
        return state

    # -- scoring ----------------------------------------------------------------------------
    @property
    def columns(self) -> list[str]:
        return [*(self.numeric or []), *(self.categorical or [])]

    def takes_raw(self, columns: Any) -> bool:
        """True when rows with these columns are records as they land (else a feature frame)."""
        present = set(columns)
        return all(c in present for c in self.inputs or {}) or not all(c in present for c in self.columns)

    def features(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The feature columns of these rows, in the model's order, typed as in training."""
        if self.takes_raw(frame.columns):
            features = self.feature_columns(
                {c: frame[c].array for c in self.inputs or {} if c in frame.columns}
            )
        else:
            features = self.typed({c: frame[c] for c in self.columns})
        return pd.DataFrame(features, index=frame.index, copy=False)

    def feature_columns(self, raw: dict[str, Any]) -> dict[str, np.ndarray]:
        """Records as column arrays (every input the model reads) → its feature columns.

        Column arrays rather than a DataFrame: on the few rows of a request, pandas' per-column
        cost is most of the time (8.6 ms a call for 3 flights through a DataFrame, measured)."""
        missing = [c for c in self.inputs or {} if c not in raw]
        if missing:
            raise BadBatchError(
                f"the records lack {missing}, which the model reads: send each record as it lands"
                f" (or every feature column: {self.columns})"
            )
        cache = self._cached()
        columns = Columns({name: self.typed_input(name, raw[name]) for name in self.inputs or {}})
        for lookup in cache["lookups"]:
            columns.update(lookup(columns))
        for name, expression in cache["expressions"].items():
            try:
                columns[name] = expression(columns)
            except Exception as exc:  # a column of the wrong type (e.g. .dt on numbers)
                raise ConfigError(
                    f"features.derived.{name}: cannot evaluate {expression.text!r} ({exc})"
                ) from None
        return self.typed(columns)

    def typed_input(self, name: str, values: Any) -> Any:
        """One column the model reads, of the kind it was in training."""
        kind = (self.inputs or {})[name]
        if kind == TIME:
            series = values.reset_index(drop=True) if isinstance(values, pd.Series) else pd.Series(values)
            if value_kind(series) != TIME:
                try:
                    series = pd.to_datetime(series, utc=True, format="ISO8601")
                except (ValueError, TypeError) as exc:
                    raise BadBatchError(f"{name}: not a time ({exc})") from None
            zone = (self.zones or {}).get(name, "")
            aware = isinstance(series.dtype, pd.DatetimeTZDtype)
            if zone:
                return series.dt.tz_convert(zone) if aware else series.dt.tz_localize(zone)
            return series.dt.tz_convert("UTC").dt.tz_localize(None) if aware else series
        if kind == NUMBER:
            array = np.asarray(values)
            if array.dtype == object:
                array = pd.to_numeric(
                    pd.Series(array).where(pd.notna(array), np.nan), errors="raise"
                ).to_numpy()
            return array.astype(np.float64, copy=False)
        if kind == TEXT:
            return _text(values)
        return np.asarray(values)

    def typed(self, columns: dict[str, Any]) -> dict[str, np.ndarray]:
        """The feature columns as training types them: float64, and text with NaN for missing."""
        values = dict(columns)  # the arrays themselves (a `Columns` would wrap each in a Series)
        size = len(next(iter(values.values()), ()))
        out = {
            name: _broadcast(values[name], size).astype(np.float64, copy=False) for name in self.numeric or []
        }
        out |= {name: _text(_broadcast(values[name], size)) for name in self.categorical or []}
        return out

    def _cached(self) -> dict[str, Any]:
        # Unpacked, indexed tables and parsed expressions, built once per loaded model.
        cache = self.__dict__.get("_cache")
        if cache is None:
            unpacked = {name: unpack_table(packed) for name, packed in (self.tables or {}).items()}
            try:
                expressions = {name: parse_expression(text) for name, text in (self.derived or {}).items()}
            except ExpressionError as exc:  # a model file whose expressions were edited
                raise ConfigError(f"the model's derived features are not allowed: {exc}") from None
            cache = {
                "lookups": [
                    Lookup(unpacked[j["table"]], j["match"], j["columns"], j["table"])
                    for j in self.joins or []
                ],
                "expressions": expressions,
            }
            self.__dict__["_cache"] = cache
        return cache


class Columns(dict[str, Any]):
    """Column arrays that expressions read like a frame: `columns` lists them, `frame[name]`
    gives a Series (for `.dt` and `.str`)."""

    @property
    def columns(self) -> Any:
        return self.keys()

    def __getitem__(self, name: str) -> pd.Series:
        values = super().__getitem__(name)
        # One RangeIndex for every column, so arithmetic between them never aligns on labels.
        return values if isinstance(values, pd.Series) else pd.Series(values, copy=False)


def _broadcast(values: Any, size: int) -> np.ndarray:
    if isinstance(values, pd.Series):
        return values.to_numpy()
    array = np.asarray(values)
    return np.full(size, array) if array.ndim == 0 else array


def _text(values: Any) -> np.ndarray:
    array = np.array(values, dtype=object)
    array[pd.isna(array)] = np.nan  # None would be a category of its own to some encoders
    return array
