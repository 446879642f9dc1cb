"""Validated batches → features: join the dimension tables, derive columns, label rows,
split by time, and build the preprocessing that ships inside the model.

Everything here is driven by the config: the column names, joins, derivations and the
target condition all come from `ProjectConfig`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

from mlops.config import FeaturesConfig, JoinSpec, ProjectConfig, TargetConfig
from mlops.errors import BadBatchError, ConfigError
from mlops.expressions import parse_expression
from mlops.record_features import Lookup, RecordFeatures, derive

PERIOD_COLUMN = "_period"  # which batch a row came from; drives the time-based split


@dataclass(frozen=True)
class TrainingFrame:
    """The labelled, joined rows of one request, and a fingerprint of what built them."""

    frame: pd.DataFrame
    periods: list[str]
    unlabelled_rows: int
    fingerprint: str


@dataclass(frozen=True)
class Split:
    X_train: pd.DataFrame
    y_train: pd.Series
    X_holdout: pd.DataFrame
    y_holdout: pd.Series
    train_periods: list[str]
    holdout_periods: list[str]
    fingerprint: str  # of the snapshots and config that produced these rows
    holdout_times: pd.Series | None = None  # the time column of the holdout rows (for plots)


def record_features(
    config: ProjectConfig,
    dims: dict[str, pd.DataFrame],
    batch: pd.DataFrame,
    snapshots: dict[str, str] | None = None,
) -> RecordFeatures:
    """The step that turns rows shaped like `batch` into features: the one place features are
    computed, in training, in monitoring and inside the registered model (see
    `mlops.record_features`). `snapshots` names the dimension tables' content hashes."""
    return RecordFeatures.build(
        batch,
        dims,
        [join.model_dump() for join in config.data.joins],
        config.features.derived,
        config.features.numeric,
        config.features.categorical,
        snapshots,
    )


def join_tables(batch: pd.DataFrame, dims: dict[str, pd.DataFrame], joins: list[JoinSpec]) -> pd.DataFrame:
    """Left-join each dimension table; a batch row never disappears for lack of a match."""
    joined = batch.copy()
    for join in joins:
        lookup = Lookup(dims[join.table], join.match, join.columns, join.table)
        overlap = set(join.columns.values()) & set(joined.columns)
        if overlap:
            raise ConfigError(f"joins.{join.table}: columns {sorted(overlap)} already exist; rename them")
        for column, values in lookup(joined).items():
            joined[column] = values
    return joined


def add_derived(frame: pd.DataFrame, derived: dict[str, str]) -> pd.DataFrame:
    """Evaluate each configured expression, in order (one may read an earlier one's column),
    through the allowed operations of `mlops.expressions` (never `eval`)."""
    return derive(frame, {name: parse_expression(text) for name, text in derived.items()})


def label_rows(frame: pd.DataFrame, target: TargetConfig) -> tuple[pd.DataFrame, int]:
    """Add the label column; rows whose target is missing carry no label and are dropped.

    binary: 0/1 by the target rule; multiclass: the column's value (or its bin) as a class,
    and a class outside `classes` is an error; regression: the column as a float."""
    if target.column not in frame.columns:
        raise BadBatchError(f"target column {target.column!r} is missing from the batch")
    values = frame[target.column]
    labelled = values.notna()
    out = frame.loc[labelled].copy()
    out[target.label] = target_values(out[target.column], target)
    return out, int((~labelled).sum())


def target_values(values: pd.Series, target: TargetConfig) -> pd.Series:
    """The label of each (non-null) target value, by the target's kind."""
    if target.kind == "binary":
        ops = {
            ">=": lambda v: v >= target.value,
            ">": lambda v: v > target.value,
            "<=": lambda v: v <= target.value,
            "<": lambda v: v < target.value,
            "==": lambda v: v == target.value,
            "!=": lambda v: v != target.value,
            "in": lambda v: v.isin(target.value if isinstance(target.value, list) else [target.value]),
        }
        return ops[target.op](values).astype(np.int8)
    if target.kind == "regression":
        numbers = pd.to_numeric(values, errors="coerce")
        bad = numbers.isna()
        if bad.any():
            examples = values[bad].astype(str).unique()[:3].tolist()
            raise BadBatchError(
                f"regression target {target.column!r} holds {int(bad.sum())} value(s) that are not numbers,"
                f" e.g. {examples}: fix the data or the target column"
            )
        return numbers.astype("float64")
    if target.bins is not None:
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.isna().any():
            examples = values[numbers.isna()].astype(str).unique()[:3].tolist()
            raise BadBatchError(f"target {target.column!r} is cut into bins but holds text, e.g. {examples}")
        assert target.classes is not None
        index = np.searchsorted(np.asarray(target.bins, dtype=float), numbers.to_numpy(), side="right")
        return pd.Series(np.asarray(target.classes, dtype=object)[index], index=values.index, dtype=object)
    classes = values.astype(object)
    if target.classes is not None:
        known = {str(c) for c in target.classes}
        by_text = {str(c): c for c in target.classes}
        unknown = ~classes.astype(str).isin(known)
        if unknown.any():
            found = sorted(classes[unknown].astype(str).unique())[:5]
            raise BadBatchError(
                f"target {target.column!r} holds {int(unknown.sum())} row(s) of classes {found} that are not"
                f" in target.classes {target.classes}: add them to the config or fix the data"
            )
        classes = classes.astype(str).map(by_text)
    return classes


def build_training_frame(
    batches: dict[str, pd.DataFrame],
    dims: dict[str, pd.DataFrame],
    config: ProjectConfig,
    fingerprint: str,
) -> TrainingFrame:
    """Concatenate the period batches, join, derive and label them."""
    parts = [batch.assign(**{PERIOD_COLUMN: period}) for period, batch in sorted(batches.items())]
    frame = pd.concat(parts, ignore_index=True)
    features = record_features(config, dims, frame).features(frame)
    carried = [
        c for c in (config.target.column, config.data.time_column, PERIOD_COLUMN) if c in frame.columns
    ]
    frame = pd.concat([features, frame[[c for c in carried if c not in features.columns]]], axis=1)
    frame, unlabelled = label_rows(frame, config.target)
    keep = [*config.features.columns, config.target.label, config.data.time_column, PERIOD_COLUMN]
    frame = frame[keep].sort_values([config.data.time_column], kind="stable").reset_index(drop=True)
    return TrainingFrame(frame, sorted(batches), unlabelled, fingerprint)


def time_split(
    training: TrainingFrame,
    features: FeaturesConfig,
    label: str,
    holdout_periods: int,
    time_column: str | None = None,
) -> Split:
    """Train on the earlier periods, hold out the latest ones: no row from the future leaks in."""
    periods = training.periods
    if len(periods) <= holdout_periods:
        raise ConfigError(
            f"{len(periods)} period(s) {periods} leave nothing to train on with split.holdout_periods={holdout_periods}"
        )
    holdout = periods[-holdout_periods:]
    frame = training.frame
    is_holdout = frame[PERIOD_COLUMN].isin(holdout)
    train, test = frame.loc[~is_holdout], frame.loc[is_holdout]
    for name, part in (("train", train), ("holdout", test)):
        if part.empty:
            raise BadBatchError(f"the {name} split has no rows")
        if part[label].dtype != np.float64 and part[label].nunique() < 2:
            raise BadBatchError(
                f"the {name} split has {len(part)} rows and needs at least two classes (both classes of a 0/1 label) to train on"
            )
    cols = features.columns
    return Split(
        train[cols],
        train[label],
        test[cols],
        test[label],
        periods[:-holdout_periods],
        holdout,
        training.fingerprint,
        test[time_column] if time_column in test.columns else None,
    )


def build_preprocessor(features: FeaturesConfig, encoding: str) -> ColumnTransformer:
    """Numeric: median-impute (+ scale for one-hot models). Categorical: one-hot or ordinal,
    with unseen categories mapped to 'unknown' rather than failing at serving time."""
    if encoding == "onehot":
        numeric = Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())])
        categorical = Pipeline(
            [
                ("impute", SimpleImputer(strategy="constant", fill_value="missing")),
                ("encode", OneHotEncoder(handle_unknown="infrequent_if_exist", min_frequency=20)),
            ]
        )
    else:
        # Trees split on raw values and handle NaN themselves; codes stay below 255 bins.
        numeric = "passthrough"
        categorical = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
            max_categories=250,
        )
    return ColumnTransformer(
        [
            ("numeric", numeric, features.numeric),
            ("categorical", categorical, features.categorical),
        ],
        verbose_feature_names_out=False,
    )


def fingerprint_inputs(*parts: str) -> str:
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
