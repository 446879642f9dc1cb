"""New batch → drift verdict: rebuild the data the champion learned from, line a new batch up
against it column by column, let Evidently measure the drift, and decide what to do about it.

The steps are plain functions (flows/stages.py declares the Prefect tasks). Nothing here
talks to MLflow or Prefect, so every step runs in a unit test.

Evidently fails a whole report on a single empty column, so every column is checked first:
one that cannot be assessed (missing, all null, constant in the reference) is left out and
named with the reason, and a batch too small or too broken gets the verdict `cannot_judge`.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops import prediction_log
from mlops.config import DataConfig, MonitoringConfig, ProjectConfig, TableSpec
from mlops.errors import BadBatchError, ConfigError, LandingError
from mlops.expressions import parse_expression
from mlops.names import SNAPSHOTS_TAG, TRAINING_FINGERPRINT_TAG
from mlops.objective import NAMES, NEEDS_TWO_CLASSES, Objective
from mlops.periods import Periods
from mlops.storage import Store
from tasks.features import add_derived, build_training_frame, join_tables, label_rows
from tasks.ingest import READERS, Snapshot, TimeColumn, load_snapshot_manifest, read_snapshot

SCORE = "score"  # the champion's answer as one number: p(positive), the value, or p(its class)
PREDICTED_CLASS = "predicted_class"  # multiclass: the champion's class, whose mix is prediction drift
STATIC = "static"  # the `snapshots` tag names a dimension table "<table>/static"

NO_DRIFT = "no_drift"
DRIFT_RETRAIN = "drift_retrain"
PERFORMANCE_DROP_RETRAIN = "performance_drop_retrain"
CANNOT_JUDGE = "cannot_judge"
RETRAIN_VERDICTS = frozenset({DRIFT_RETRAIN, PERFORMANCE_DROP_RETRAIN})


# -- the reference: what the champion was trained on --------------------------------------


@dataclass(frozen=True)
class Lineage:
    """What a model version was built from, as its registration tags record it."""

    snapshots: dict[str, str]  # "flights/2013-01" or "weather/static" -> sha256 of the raw file
    periods: list[str]  # months of the batch table, oldest first
    fingerprint: str  # of the snapshots and the config: names the training frame

    @classmethod
    def from_tags(cls, tags: dict[str, str], batch_table: str, version: str) -> Lineage:
        try:
            snapshots = json.loads(tags[SNAPSHOTS_TAG])
        except (KeyError, json.JSONDecodeError):
            raise ConfigError(
                f"model version {version} has no readable `snapshots` tag, so the data it was trained"
                " on cannot be found: register it with the training pipeline"
            ) from None
        periods = sorted(name.split("/", 1)[1] for name in snapshots if name.startswith(f"{batch_table}/"))
        if not periods:
            raise ConfigError(f"model version {version}: its `snapshots` tag names no {batch_table} month")
        return cls(snapshots, periods, tags.get(TRAINING_FINGERPRINT_TAG, ""))


def find_snapshot(store: Store, table: str, sha256: str) -> Snapshot:
    """The manifest of a content-addressed snapshot, whichever file type it was landed as."""
    for suffix in READERS:
        key = f"{table}/{sha256}{suffix}.json"
        if store.exists(key):
            return load_snapshot_manifest(store, key)
    raise LandingError(
        f"snapshot {table}/{sha256[:12]} is not in {store.uri}: the reference data of the champion is"
        " gone; retrain, or restore the snapshot store"
    )


def load_lineage_tables(
    store: Store, lineage: Lineage, data: DataConfig
) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """The snapshots a version was trained on: batch periods by period, dimension tables by name."""
    batches: dict[str, pd.DataFrame] = {}
    dims: dict[str, pd.DataFrame] = {}
    times = TimeColumn.of(data)
    for name, sha in lineage.snapshots.items():
        table, _, period = name.partition("/")
        frame = read_snapshot(store, find_snapshot(store, table, sha), times=times)
        if table == data.batch_table:
            batches[period] = frame
        elif period == STATIC:
            dims[table] = frame
    return batches, dims


def build_reference(store: Store, lineage: Lineage, config: ProjectConfig) -> pd.DataFrame:
    """The champion's training frame, rebuilt with the training code from its snapshots."""
    batches, dims = load_lineage_tables(store, lineage, config.data)
    return build_training_frame(batches, dims, config, lineage.fingerprint).frame


def sample_rows(frame: pd.DataFrame, max_rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample when the frame is larger than `max_rows`; the frame itself otherwise."""
    if max_rows is None or len(frame) <= max_rows:
        return frame
    return frame.sample(n=max_rows, random_state=seed).sort_index()


# -- periods in the landing zone ------------------------------------------------------------


def landed_periods(landing: Store, spec: TableSpec, periods: Periods) -> list[str]:
    """Periods with a file of a partitioned table in the landing zone (any type), oldest first."""
    prefix, _, suffix = spec.path.partition("{period}")
    stem = re.sub(r"\.[A-Za-z0-9]+$", "", suffix)
    pattern = re.compile(rf"^{re.escape(prefix)}({periods.body}){re.escape(stem)}\.[A-Za-z0-9]+$")
    folder = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
    return sorted({m.group(1) for key in landing.list(folder) if (m := pattern.match(key))})


def newest_period(landing: Store, spec: TableSpec, periods: Periods) -> str:
    landed = landed_periods(landing, spec, periods)
    if not landed:
        raise LandingError(
            f"no {periods.cadence} of {spec.path} ({periods.form}) in {landing.uri}: run `mlops seed`,"
            " or check data.landing_uri and data.cadence"
        )
    return landed[-1]


def retraining_window(batch: str, size: int, landed: list[str], periods: Periods) -> list[str]:
    """The landed periods just before `batch`, at most `size` of them and without a gap: a
    retraining holds out the last one, so `batch` stays unseen for the promotion to judge on."""
    window: list[str] = []
    period = periods.shift(batch, -1)
    available = set(landed)
    while period in available and len(window) < size:
        window.insert(0, period)
        period = periods.shift(period, -1)
    return window


# -- the current batch ---------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnIssue:
    column: str
    reason: str


@dataclass(frozen=True)
class CurrentFrame:
    """A new batch shaped like the training frame: features, and the label when it has one."""

    frame: pd.DataFrame
    issues: list[ColumnIssue]  # columns the batch could not provide, and why
    labelled: bool
    dropped_rows: int = 0  # rows left out (no label, or not served)
    notes: list[str] = field(default_factory=list)


def _coerce_types(
    frame: pd.DataFrame, numeric: list[str], categorical: list[str]
) -> tuple[pd.DataFrame, list[str]]:
    """The training frame's dtypes; values that are not numbers become null, and are counted."""
    notes = []
    out = frame.copy()
    for column in numeric:
        before = out[column].notna().sum()
        values = pd.to_numeric(out[column], errors="coerce").astype("float64")
        out[column] = values.replace([np.inf, -np.inf], np.nan)
        lost = int(before - values.notna().sum())
        if lost:
            notes.append(f"{column}: {lost} value(s) are not numbers and count as missing")
    for column in categorical:
        out[column] = out[column].astype(object).where(out[column].notna(), np.nan)
    return out, notes


def build_current_frame(
    batch: pd.DataFrame, dims: dict[str, pd.DataFrame], config: ProjectConfig
) -> CurrentFrame:
    """Join, derive and label a batch the way training does, but column by column: a join or
    a derivation that cannot be made leaves its columns null and says why, instead of failing."""
    issues: list[ColumnIssue] = []
    frame = batch.copy()
    for join in config.data.joins:
        lacking = [c for c in join.match if c not in frame.columns]
        reason = f"lacks {lacking} to join {join.table}" if lacking else None
        if reason is None:
            try:
                frame = join_tables(frame, dims, [join])
            except (BadBatchError, ValueError, TypeError, KeyError) as exc:
                reason = f"cannot be joined with {join.table} ({exc})"
        if reason is not None:
            issues += [ColumnIssue(name, f"the batch {reason}") for name in join.columns.values()]
    known = {i.column for i in issues}
    for name, expression in config.features.derived.items():
        try:
            frame = add_derived(frame, {name: expression})
        except ConfigError as exc:
            inputs = sorted(c for c in known if c in parse_expression(expression).columns)
            why = f"its input {inputs} is missing" if inputs else str(exc)
            issues.append(ColumnIssue(name, f"cannot be derived: {why}"))
    features = config.features
    for column in features.columns:
        if column not in frame.columns:
            if column not in {i.column for i in issues}:
                issues.append(ColumnIssue(column, "missing from the batch"))
            frame[column] = np.nan
    target = config.target.column
    labelled = target in frame.columns and bool(frame[target].notna().any())
    dropped = 0
    notes = []
    if labelled:
        frame, dropped = label_rows(frame, config.target)  # as training does: unlabelled rows go
    elif target in frame.columns:
        notes.append(f"no {target!r} value yet: no label drift and no quality figures")
    else:
        notes.append(f"no target column {target!r}: no label drift and no quality figures")
    keep = [*features.columns, *([config.target.label] if labelled else [])]
    frame, coerce_notes = _coerce_types(
        frame[keep].reset_index(drop=True), features.numeric, features.categorical
    )
    feature_issues = [i for i in issues if i.column in set(features.columns)]
    return CurrentFrame(frame, feature_issues, labelled, dropped, notes + coerce_notes)


def label_dtype(values: pd.Series, kind: str) -> pd.Series:
    """A label column typed as training types it: 0/1 int8, a class (object) or a float."""
    if kind == "binary":
        return values.astype(np.int8)
    return values.astype("float64") if kind == "regression" else values.astype(object)


def prediction_log_frame(log: pd.DataFrame, config: ProjectConfig) -> CurrentFrame:
    """The served rows of a prediction log, shaped like the training frame."""
    features = config.features
    notes = []
    served_column, version_column = prediction_log.SERVED, prediction_log.MODEL_VERSION
    served = log[log[served_column].astype(bool)] if served_column in log.columns else log
    dropped = len(log) - len(served)
    if version_column in served.columns and len(served):
        versions = sorted(served[version_column].dropna().astype(str).unique())
        notes.append(
            f"served by model version(s) {', '.join(versions)}; scores are recomputed by the champion"
        )
    frame = served.reset_index(drop=True).copy()
    issues = []
    for column in features.columns:
        if column not in frame.columns:
            issues.append(ColumnIssue(column, "missing from the prediction log"))
            frame[column] = np.nan
    label = config.target.label
    log_label = prediction_log.LABEL  # optional: only a labelled log has it
    labelled = log_label in frame.columns and frame[log_label].notna().any()
    keep = list(features.columns)
    if labelled:
        unlabelled = frame[log_label].isna()
        frame = frame.loc[~unlabelled].reset_index(drop=True)
        frame[label] = label_dtype(frame[log_label], config.target.kind)
        keep.append(label)
        if unlabelled.any():
            notes.append(f"{int(unlabelled.sum())} served row(s) have no label yet and are left out")
            dropped += int(unlabelled.sum())
    else:
        notes.append("no labels in the prediction log yet: no label drift and no quality figures")
    frame, coerce_notes = _coerce_types(frame[keep], features.numeric, features.categorical)
    return CurrentFrame(frame, issues, labelled, dropped, notes + coerce_notes)


# -- which columns can be compared ----------------------------------------------------------


def monitored_columns(config: ProjectConfig) -> tuple[list[str], list[str]]:
    """The numeric and categorical features the monitoring compares, checked against the config."""
    settings = config.monitoring
    features = config.features
    for name, columns in (
        ("exclude_columns", settings.exclude_columns),
        ("key_features", settings.key_features),
    ):
        unknown = sorted(set(columns) - set(features.columns))
        if unknown:
            raise ConfigError(f"monitoring.{name}: {unknown} are not features (features: {features.columns})")
    excluded = set(settings.exclude_columns)
    return (
        [c for c in features.numeric if c not in excluded],
        [c for c in features.categorical if c not in excluded],
    )


@dataclass(frozen=True)
class ColumnPlan:
    numeric: list[str]  # assessable numeric columns
    categorical: list[str]  # assessable categorical columns
    issues: list[ColumnIssue]  # monitored columns left out, with the reason
    unseen: dict[str, dict[str, Any]] = field(
        default_factory=dict
    )  # column -> categories the reference lacks

    @property
    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def plan_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    known: list[ColumnIssue],
) -> ColumnPlan:
    """Keep the columns a distance can be computed for; name every other one and why."""
    issues = list(known)
    skip = {i.column for i in issues}
    kept: dict[str, list[str]] = {"numeric": [], "categorical": []}
    unseen: dict[str, dict[str, Any]] = {}
    for kind, columns in (("numeric", numeric), ("categorical", categorical)):
        for column in columns:
            if column in skip:
                continue
            if column not in current.columns:
                issues.append(ColumnIssue(column, "missing from the batch"))
                continue
            ref, cur = reference[column].dropna(), current[column].dropna()
            if ref.empty:
                issues.append(ColumnIssue(column, "all values are null in the reference"))
            elif cur.empty:
                issues.append(ColumnIssue(column, f"all {len(current)} values are null in the batch"))
            elif kind == "numeric" and ref.nunique() == 1:
                issues.append(
                    ColumnIssue(
                        column,
                        f"constant in the reference ({ref.iloc[0]!r}): a distance has no scale"
                        f" ({cur.nunique()} distinct value(s) in the batch)",
                    )
                )
            else:
                kept[kind].append(column)
                if kind == "categorical":
                    new = cur[~cur.isin(set(ref))]
                    if len(new):
                        unseen[column] = {
                            "categories": sorted(map(str, new.unique()))[:20],
                            "rows": len(new),
                            "share": round(len(new) / len(cur), 4),
                        }
    return ColumnPlan(kept["numeric"], kept["categorical"], issues, unseen)


# -- the Evidently report -------------------------------------------------------------------


def column_threshold(settings: MonitoringConfig, column: str) -> float:
    return settings.column_thresholds.get(column, settings.threshold)


def drift_metrics(plan: ColumnPlan, settings: MonitoringConfig) -> list[Any]:
    """One ValueDrift per assessable column, with its type, distance and threshold pinned.

    These are the per-column metrics DataDriftPreset generates. The preset also adds a
    drifted-columns count and two summary widgets, each of which computes every column's
    drift again: over twice the time for numbers the verdict derives from these scores
    (bench/drift.py). The share of drifted columns is in the summary, MLflow and Prefect."""
    from evidently.metrics import ValueDrift

    metrics: list[Any] = []
    for column in plan.columns:
        method = settings.numeric_method if column in plan.numeric else settings.categorical_method
        metrics.append(ValueDrift(column=column, method=method, threshold=column_threshold(settings, column)))
    return metrics


def run_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    plan: ColumnPlan,
    settings: MonitoringConfig,
    label: str | None,
    name: str,
    metadata: dict[str, str],
    timestamp: datetime | None = None,
    kind: str = "binary",
) -> Any:
    """Drift of the assessable columns, of the champion's predictions and of the label; a data
    summary; Evidently's quality preset of the task's kind when the batch allows it. The
    prediction drift is of the score (binary: p(positive); regression: the value) or, for a
    multiclass model, of the mix of its predicted classes; the label's distance is the numeric
    one for a regression target, the categorical one otherwise. Returns the snapshot."""
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import ClassificationQuality, DatasetStats, RegressionQuality

    with_label = label is not None and label in current.columns and label in reference.columns
    numeric_label = kind == "regression"
    prediction = PREDICTED_CLASS if kind == "multiclass" else SCORE
    classification = regression = None
    quality: list[Any] = []
    if with_label and kind == "binary" and current[label].nunique() == 2:
        classification = [BinaryClassification(target=label, prediction_probas=SCORE, pos_label=1)]
        quality = [ClassificationQuality(conf_matrix=True)]
    elif with_label and numeric_label and len(current) >= 2:
        regression = [Regression(target=label, prediction=SCORE)]
        quality = [RegressionQuality()]
    labels = [label] if with_label else []
    definition = DataDefinition(
        numerical_columns=[*plan.numeric, SCORE, *(labels if numeric_label else [])],
        categorical_columns=[
            *plan.categorical,
            *([PREDICTED_CLASS] if prediction == PREDICTED_CLASS else []),
            *([] if numeric_label else labels),
        ],
        classification=classification,
        regression=regression,
    )
    metrics = drift_metrics(plan, settings)
    prediction_method = (
        settings.categorical_method if prediction == PREDICTED_CLASS else settings.numeric_method
    )
    metrics.append(
        ValueDrift(column=prediction, method=prediction_method, threshold=settings.prediction_threshold)
    )
    if with_label:
        label_method = settings.numeric_method if numeric_label else settings.categorical_method
        metrics.append(ValueDrift(column=label, method=label_method, threshold=settings.label_threshold))
    metrics.append(DatasetStats())
    metrics += quality
    columns = list(dict.fromkeys([*plan.columns, SCORE, prediction, *labels]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas/scipy chatter from inside Evidently
        return Report(metrics, metadata=metadata).run(
            Dataset.from_pandas(current[columns], data_definition=definition),
            Dataset.from_pandas(reference[columns], data_definition=definition),
            name=name,
            timestamp=timestamp,  # the batch's time, so the Evidently dashboard runs over months
        )


def drift_scores(snapshot_dict: dict[str, Any]) -> dict[str, float]:
    """Column -> drift score of every ValueDrift in a snapshot."""
    scores = {}
    for metric in snapshot_dict.get("metrics", []):
        config = metric.get("config", {})
        if config.get("type", "").endswith(":ValueDrift"):
            scores[config["column"]] = float(metric["value"])
    return scores


# -- figures and the verdict ----------------------------------------------------------------


@dataclass(frozen=True)
class DriftFigures:
    """Everything the verdict rests on, as plain numbers (logged as MLflow metrics)."""

    rows: int
    reference_rows: int
    monitored: list[str]  # every column monitoring is asked to compare
    column_scores: dict[str, float]  # assessed column -> drift score
    column_thresholds: dict[str, float]
    unassessable: list[ColumnIssue]
    prediction_score: float | None = None
    label_score: float | None = None
    current_metrics: dict[str, float] = field(default_factory=dict)  # the kind's metrics on the batch
    reference_metric: float | None = None  # the champion's holdout value of `metric`, from its run
    unseen: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: str = "roc_auc"  # training.metric: what a performance drop is measured in
    higher_is_better: bool = True

    @property
    def drifted(self) -> list[str]:
        return [c for c, s in self.column_scores.items() if s >= self.column_thresholds[c]]

    @property
    def drift_share(self) -> float:
        return len(self.drifted) / len(self.column_scores) if self.column_scores else 0.0

    @property
    def current_metric(self) -> float | None:
        return self.current_metrics.get(self.metric)

    @property
    def metric_drop(self) -> float | None:
        """How much worse the batch is than the holdout (positive = worse), in the metric."""
        current, reference = self.current_metric, self.reference_metric
        if current is None or reference is None:
            return None
        return reference - current if self.higher_is_better else current - reference

    def metrics(self) -> dict[str, float]:
        """Numeric figures under stable names, so MLflow charts them across batches."""
        out: dict[str, float] = {
            "rows": float(self.rows),
            "reference_rows": float(self.reference_rows),
            "drift_share": self.drift_share,
            "n_drifted_columns": float(len(self.drifted)),
            "n_assessed_columns": float(len(self.column_scores)),
            "n_unassessable_columns": float(len(self.unassessable)),
            **{f"drift_{c}": s for c, s in self.column_scores.items()},
        }
        if self.prediction_score is not None:
            out["prediction_drift"] = self.prediction_score
        if self.label_score is not None:
            out["label_drift"] = self.label_score
        out |= {f"current_{k}": v for k, v in self.current_metrics.items() if k != "rows"}
        if self.reference_metric is not None:
            out[f"reference_{self.metric}"] = self.reference_metric
            if self.metric_drop is not None:
                out[f"{self.metric}_drop"] = self.metric_drop
        return out


@dataclass(frozen=True)
class Verdict:
    kind: str  # no_drift | drift_retrain | performance_drop_retrain | cannot_judge
    reasons: list[str]

    @property
    def retrain(self) -> bool:
        return self.kind in RETRAIN_VERDICTS


def judge(figures: DriftFigures, settings: MonitoringConfig) -> Verdict:
    """The verdict on one batch. A performance drop outranks drift (it is the harm drift can
    only predict); a batch too small, or with too many columns unassessable, gets no verdict."""
    if figures.rows == 0:
        return Verdict(CANNOT_JUDGE, ["the batch has no rows"])
    if figures.rows < settings.min_rows:
        return Verdict(
            CANNOT_JUDGE, [f"{figures.rows} rows: fewer than monitoring.min_rows={settings.min_rows}"]
        )
    missing = [f"{i.column}: {i.reason}" for i in figures.unassessable]
    if not figures.column_scores:
        return Verdict(CANNOT_JUDGE, ["no column could be assessed", *missing])
    share_missing = len(figures.unassessable) / max(len(figures.monitored), 1)
    if share_missing > settings.max_unassessable_share:
        return Verdict(
            CANNOT_JUDGE,
            [
                f"{len(figures.unassessable)} of {len(figures.monitored)} columns could not be assessed"
                f" ({share_missing:.0%} > monitoring.max_unassessable_share={settings.max_unassessable_share:.0%})",
                *missing,
            ],
        )

    drifted = figures.drifted
    drift_reasons = []
    if figures.drift_share >= settings.drift_share:
        drift_reasons.append(
            f"{len(drifted)} of {len(figures.column_scores)} columns drifted ({figures.drift_share:.0%}"
            f" >= {settings.drift_share:.0%}): {', '.join(drifted)}"
        )
    key_drifted = [c for c in settings.key_features if c in drifted]
    if key_drifted:
        scores = ", ".join(
            f"{c} {figures.column_scores[c]:.3f} >= {figures.column_thresholds[c]}" for c in key_drifted
        )
        drift_reasons.append(f"key feature(s) drifted: {scores}")
    if figures.prediction_score is not None and figures.prediction_score >= settings.prediction_threshold:
        drift_reasons.append(
            f"the champion's predictions drifted: {figures.prediction_score:.3f} >= {settings.prediction_threshold}"
        )
    if figures.label_score is not None and figures.label_score >= settings.label_threshold:
        drift_reasons.append(f"the label drifted: {figures.label_score:.3f} >= {settings.label_threshold}")

    current, reference, drop = figures.current_metric, figures.reference_metric, figures.metric_drop
    name = NAMES.get(figures.metric, figures.metric)
    if current is not None and reference is not None and drop is not None and drop > settings.max_metric_drop:
        side = "below" if figures.higher_is_better else "above"
        return Verdict(
            PERFORMANCE_DROP_RETRAIN,
            [
                f"{name} {current:.4f} on the batch is {drop:.4f} {side} the champion's"
                f" holdout {reference:.4f} (> monitoring.max_metric_drop={settings.max_metric_drop})",
                *drift_reasons,
            ],
        )
    if drift_reasons:
        return Verdict(DRIFT_RETRAIN, drift_reasons)

    unassessed_keys = [i for i in figures.unassessable if i.column in settings.key_features]
    if unassessed_keys:
        return Verdict(
            CANNOT_JUDGE,
            [f"key feature {i.column} could not be assessed: {i.reason}" for i in unassessed_keys],
        )
    reasons = [
        f"{len(drifted)} of {len(figures.column_scores)} columns drifted ({figures.drift_share:.0%}"
        f" < {settings.drift_share:.0%}){': ' + ', '.join(drifted) if drifted else ''}; no key feature drifted"
    ]
    if current is not None and reference is not None:
        reasons.append(f"{name} {current:.4f} against the champion's holdout {reference:.4f}")
    if missing:
        reasons.append(f"not assessed: {'; '.join(missing)}")
    return Verdict(NO_DRIFT, reasons)


def current_quality(
    frame: pd.DataFrame, label: str, prediction: np.ndarray, objective: Objective, classes: Any = None
) -> tuple[dict[str, float], str | None]:
    """The champion's quality on a labelled batch, the way training measured its holdout."""
    y = frame[label].to_numpy()
    if objective.metric in NEEDS_TWO_CLASSES and len(pd.unique(y)) < 2:
        return (
            {},
            f"the batch's label has one class only ({pd.unique(y).tolist()}): no {objective.metric_name}",
        )
    return objective.evaluate(y, prediction, classes), None


def figures_from_snapshot(
    snapshot_dict: dict[str, Any],
    plan: ColumnPlan,
    monitored: list[str],
    settings: MonitoringConfig,
    rows: int,
    reference_rows: int,
    label: str | None,
    current_metrics: dict[str, float],
    reference_metric: float | None,
    objective: Objective | None = None,
) -> DriftFigures:
    objective = objective or Objective("binary", "roc_auc")
    scores = drift_scores(snapshot_dict)
    return DriftFigures(
        rows=rows,
        reference_rows=reference_rows,
        monitored=monitored,
        column_scores={c: scores[c] for c in plan.columns if c in scores},
        column_thresholds={c: column_threshold(settings, c) for c in plan.columns},
        unassessable=plan.issues,
        prediction_score=scores.get(PREDICTED_CLASS if objective.kind == "multiclass" else SCORE),
        label_score=scores.get(label) if label else None,
        current_metrics=current_metrics,
        reference_metric=reference_metric,
        unseen=plan.unseen,
        metric=objective.metric,
        higher_is_better=objective.higher_is_better,
    )


def summary_document(
    figures: DriftFigures | None, verdict: Verdict, batch: str, model: dict[str, str], notes: list[str]
) -> dict[str, Any]:
    """The verdict and its figures as one JSON document (logged beside Evidently's)."""
    document: dict[str, Any] = {
        "batch": batch,
        "model": model,
        "verdict": verdict.kind,
        "reasons": verdict.reasons,
        "notes": notes,
    }
    if figures is not None:
        document |= {
            "figures": figures.metrics(),
            "drifted_columns": figures.drifted,
            "column_scores": figures.column_scores,
            "column_thresholds": figures.column_thresholds,
            "unassessable_columns": [asdict(i) for i in figures.unassessable],
            "unseen_categories": figures.unseen,
        }
    return document


# -- the Evidently workspace (read by `evidently ui`) ---------------------------------------


def dashboard(key_features: list[str]) -> Any:
    """The project's dashboard: drift and quality per batch, over the batches' months."""
    from evidently.sdk.models import DashboardModel, DashboardTabModel, PanelMetric
    from evidently.sdk.panels import line_plot_panel

    def metric(name: str, legend: str, **labels: str) -> PanelMetric:
        return PanelMetric(legend=legend, metric=name, metric_labels=labels)

    drift = [
        line_plot_panel(
            "Drift of the champion's predictions", [metric("ValueDrift", SCORE, column=SCORE)], size="half"
        ),
    ]
    if key_features:
        drift.append(
            line_plot_panel(
                "Drift score of the key features",
                [metric("ValueDrift", c, column=c) for c in key_features],
                size="half",
            )
        )
    quality = [
        line_plot_panel("ROC-AUC on the batch", [metric("RocAuc", "ROC-AUC")], size="half"),
        line_plot_panel("Rows per batch", [metric("RowCount", "rows")], size="half"),
    ]
    # Built whole: ProjectDashboard.add_panel lists a panel twice when its tab already exists.
    return DashboardModel(
        tabs=[
            DashboardTabModel(title="Drift", panels=[p.id for p in drift]),
            DashboardTabModel(title="Quality", panels=[p.id for p in quality]),
        ],
        panels=[*drift, *quality],
    )


def workspace_project(workspace_dir: Path, name: str, description: str, key_features: list[str]) -> Any:
    """The workspace's project of this name, created with its dashboard on first use."""
    from evidently.ui.workspace import Workspace

    workspace_dir.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(str(workspace_dir))
    found = workspace.search_project(name)
    if found:
        return workspace, found[0]
    project = workspace.create_project(name, description=description)
    workspace.save_dashboard(project.id, dashboard(key_features))
    return workspace, project


def add_to_workspace(
    workspace_dir: Path, project_name: str, description: str, key_features: list[str], snapshot: Any
) -> tuple[str, str]:
    """Store a report in the workspace; returns (project id, snapshot id)."""
    workspace, project = workspace_project(workspace_dir, project_name, description, key_features)
    ref = workspace.add_run(project.id, snapshot)
    return str(project.id), str(ref.id)
