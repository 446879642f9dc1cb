"""The `monitoring` flow: one new batch (a landed month, or the served rows of the prediction
log) against the data the champion was trained on → a drift verdict, recorded everywhere a
user looks: MLflow (a run per batch, Evidently's HTML and JSON), the Evidently UI workspace,
Prefect (artifacts), and a Prefect event that the retraining deployment's trigger listens to.

Read `monitoring` at the bottom first.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field

from flows.ground_truth import label_served_traffic
from flows.stages import (
    artifact_key,
    dimension_frames,
    evidently_report,
    ingest_batches,
    prefect_run_url,
    reference_frame,
)
from mlops.config import ProjectConfig, load_config
from mlops.errors import BadBatchError, ConfigError
from mlops.names import CHALLENGER, CHAMPION, PERIODS_TAG
from mlops.objective import Objective
from mlops.periods import ANY_PERIOD_PATTERN
from mlops.prediction_log import read_labelled_log
from mlops.storage import Stores
from mlops.tracking import ModelVersionInfo, Tracker
from tasks.compare import Comparison, compare_arms, paired_metric_name
from tasks.drift import (
    CANNOT_JUDGE,
    PREDICTED_CLASS,
    SCORE,
    ColumnPlan,
    CurrentFrame,
    DriftFigures,
    Lineage,
    Verdict,
    add_to_workspace,
    build_current_frame,
    current_quality,
    figures_from_snapshot,
    judge,
    monitored_columns,
    newest_period,
    plan_columns,
    prediction_log_frame,
    sample_rows,
    summary_document,
)

DRIFT_EVENT = "mlops.drift.detected"  # the retraining deployment's trigger listens for this
MONITORED_EVENT = "mlops.monitoring.completed"  # every batch, whatever the verdict


class MonitoringRequest(BaseModel):
    """Which batch to judge, against which model. Prefect renders this as the run form in its UI."""

    config_path: str = Field("mlops.yaml", description="Project config file")
    source: Literal["landing", "prediction_log"] = Field(
        "landing", description="landing: a period of the landing zone; prediction_log: served predictions"
    )
    period: str | None = Field(
        None,
        description="landing: the period, in data.cadence's form; empty: the newest landed one",
        pattern=ANY_PERIOD_PATTERN,
    )
    first_day: date | None = Field(None, description="prediction_log: first day (UTC); empty: last_day")
    last_day: date | None = Field(None, description="prediction_log: last day (UTC); empty: today")
    model_version: str | None = Field(
        None, description="Version to judge against; empty: the champion (the challenger if none)"
    )
    request_retraining: bool = Field(
        True,
        description="Let a drift verdict start the retraining deployment (the replay retrains by itself)",
    )


@dataclass
class MonitoringOutcome:
    batch: str  # "flights/2013-07" or "predictions/2026-01-01..2026-01-31"
    period: str | None  # the landed month, when the batch is one
    verdict: str
    reasons: list[str]
    model_name: str
    model_version: str
    figures: dict[str, float] = field(default_factory=dict)
    drifted_columns: list[str] = field(default_factory=list)
    unassessable: dict[str, str] = field(default_factory=dict)  # column -> why
    unseen: dict[str, dict[str, Any]] = field(default_factory=dict)  # column -> categories new to it
    notes: list[str] = field(default_factory=list)
    mlflow_run_url: str = ""
    report_url: str = ""  # Evidently's HTML report in the MLflow UI
    evidently_url: str = ""  # the report in the Evidently UI
    prefect_run_url: str = ""
    metric: str = "roc_auc"  # training.metric: what `current_metric` measures

    @property
    def retrain(self) -> bool:
        return Verdict(self.verdict, self.reasons).retrain

    @property
    def current_metric(self) -> float | None:
        """The champion's `metric` on this batch (None without labels)."""
        return self.figures.get(f"current_{self.metric}")


@dataclass
class LoadedBatch:
    name: str
    period: str | None
    current: CurrentFrame | None  # None: nothing could be read (the reason says why)
    reason: str | None = None
    timestamp: datetime | None = None  # when the batch happened: a month's first day, a log's last
    live: Comparison | None = None  # the log: each arm's quality on its own answers, once labelled


# -- stages -------------------------------------------------------------------------------


def resolve_model(tracker: Tracker, config: ProjectConfig, version: str | None) -> ModelVersionInfo:
    """The version to judge against: the one asked for, else the champion, else the challenger."""
    name = config.registry.model_name
    if version is None:
        aliases = tracker.aliases(name)
        version = aliases.get(CHAMPION) or aliases.get(CHALLENGER)
        if version is None:
            raise ConfigError(
                f"model {name!r} has no champion and no challenger to monitor against: run `mlops train`"
            )
    found = tracker.model_version(name, version)
    if found is None:
        raise ConfigError(f"model {name!r} has no version {version}")
    return found


def load_landing_batch(config: ProjectConfig, stores: Stores, period: str | None) -> LoadedBatch:
    """Ingest a month (snapshot it, like training does) and shape it like the training frame.
    A file that is not a readable table, or is empty, is quarantined and cannot be judged."""
    spec = config.data.tables[config.data.batch_table]
    periods = config.data.periods
    period = periods.require(period) if period else newest_period(stores.landing, spec, periods)
    name = f"{config.data.batch_table}/{period}"
    try:
        batches = ingest_batches(config, stores, [period])
    except BadBatchError as exc:
        return LoadedBatch(name, period, None, str(exc))
    current = build_current_frame(batches[period].frame, dimension_frames(batches), config)
    stamp = periods.start(period)
    return LoadedBatch(f"{name}@{batches[period].snapshot.sha256[:12]}", period, current, timestamp=stamp)


def load_logged_batch(
    config: ProjectConfig, stores: Stores, first: date | None, last: date | None
) -> LoadedBatch:
    """The served rows of the log's days, with the labels landed so far joined first (the
    ground-truth stage), so the champion's quality and each arm's are measured on them."""
    last = last or date.today()
    first = first or last
    name = f"predictions/{first.isoformat()}..{last.isoformat()}"
    ground = label_served_traffic(config, stores, first, last)
    log = read_labelled_log(stores.labelled_predictions, first, last)
    if log.empty:
        return LoadedBatch(
            name, None, None, f"no predictions were logged in {stores.predictions.uri} from {first} to {last}"
        )
    current = prediction_log_frame(log, config)
    rows = ground.rows
    current.notes.insert(
        0,
        f"{rows['joined']} of {rows['logged']} logged rows joined to a label (no key: {rows['no_key']},"
        f" no label yet: {rows['no_label_yet']}, ambiguous key: {rows['ambiguous_key']})",
    )
    current.notes.extend(f"labels left out: {why}" for why in ground.rejected)
    live = compare_arms(log, Objective.of(config), first)
    return LoadedBatch(name, None, current, timestamp=datetime.combine(last, time()), live=live)


def live_figures(live: Comparison | None, metric: str) -> dict[str, float]:
    """Each arm's `metric` on its own logged answers and its labelled rows, as MLflow metrics."""
    if live is None:
        return {}
    figures = {}
    for arm in live.arms:
        figures[f"live_{arm.arm}_v{arm.model_version}_labelled_rows"] = float(arm.labelled_rows)
        if metric in arm.metrics:
            figures[f"live_{arm.arm}_v{arm.model_version}_{metric}"] = arm.metrics[metric]
    return figures


def score(
    model: Any, frame: pd.DataFrame, columns: list[str], objective: Objective, classes: Any = None
) -> tuple[pd.DataFrame, np.ndarray]:
    """The frame with the champion's score (and, multiclass, its predicted class) beside the
    features, and the champion's full answer for the quality figures."""
    out = frame.copy()
    if not len(frame):
        out[SCORE] = pd.Series(dtype="float64")
        return out, np.empty(0)
    prediction = objective.predict(model, frame[columns], classes)
    out[SCORE] = objective.score_of(prediction)
    if objective.kind == "multiclass":
        out[PREDICTED_CLASS] = objective.labels(prediction, classes)
    return out, prediction


def render_files(snapshot: Any, summary: dict[str, Any], folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {"summary": folder / "summary.json"}
    files["summary"].write_text(json.dumps(summary, indent=2, default=str))
    if snapshot is not None:
        files["html"] = folder / "report.html"
        snapshot.save_html(str(files["html"]))
        files["json"] = folder / "evidently.json"
        snapshot.save_json(str(files["json"]))
    return files


def verdict_markdown(
    outcome: MonitoringOutcome, figures: DriftFigures | None, plan: ColumnPlan | None
) -> str:
    lines = [
        f"## {outcome.batch}: **{outcome.verdict}**",
        "",
        f"Against {outcome.model_name} v{outcome.model_version}.",
        "",
        *[f"- {reason}" for reason in outcome.reasons],
    ]
    if figures is not None:
        lines += ["", "| figure | value |", "|---|---|"]
        for key in (
            "rows",
            "reference_rows",
            "drift_share",
            "n_drifted_columns",
            "prediction_drift",
            "label_drift",
            f"current_{outcome.metric}",
            f"reference_{outcome.metric}",
        ):
            if key in outcome.figures:
                lines.append(f"| {key} | {outcome.figures[key]:.4g} |")
    if outcome.unassessable:
        lines += ["", "Not assessed:", *[f"- `{c}`: {why}" for c, why in outcome.unassessable.items()]]
    if plan is not None and plan.unseen:
        lines += ["", "Categories the reference never had:"]
        lines += [
            f"- `{c}`: {u['categories']} ({u['rows']} rows, {u['share']:.1%})" for c, u in plan.unseen.items()
        ]
    if outcome.notes:
        lines += ["", *[f"_{note}_" for note in outcome.notes]]
    links = [f"[MLflow run]({outcome.mlflow_run_url})"]
    if outcome.evidently_url:
        links.append(f"[Evidently report]({outcome.evidently_url})")
    if outcome.report_url:
        links.append(f"[HTML report in MLflow]({outcome.report_url})")
    return "\n".join([*lines, "", " · ".join(links)])


def announce(outcome: MonitoringOutcome, config_path: str, request_retraining: bool) -> None:
    """Prefect events: every batch, and `mlops.drift.detected` when the verdict says retrain."""
    resource = {
        "prefect.resource.id": f"mlops.model.{outcome.model_name}",
        "prefect.resource.name": outcome.model_name,
        "mlops.model.version": outcome.model_version,
        "mlops.batch": outcome.batch,
        # the retraining trigger matches on this, so a caller that retrains itself opts out
        "mlops.retraining": "requested" if request_retraining else "handled-by-caller",
    }
    payload = {
        "batch": outcome.batch,
        "period": outcome.period,
        "verdict": outcome.verdict,
        "reasons": outcome.reasons,
        "model_name": outcome.model_name,
        "model_version": outcome.model_version,
        "config_path": config_path,
        "figures": outcome.figures,
        "drifted_columns": outcome.drifted_columns,
        "mlflow_run_url": outcome.mlflow_run_url,
        "evidently_url": outcome.evidently_url,
    }
    emit_event(event=MONITORED_EVENT, resource=resource, payload=payload)
    if outcome.retrain:
        emit_event(event=DRIFT_EVENT, resource=resource, payload=payload)


@dataclass
class Judgement:
    """What the comparison found; `snapshot` is Evidently's report (None when none could run)."""

    verdict: Verdict
    notes: list[str]
    figures: DriftFigures | None = None
    plan: ColumnPlan | None = None
    snapshot: Any = None


def judge_batch(
    config: ProjectConfig,
    tracker: Tracker,
    model: ModelVersionInfo,
    stores: Stores,
    loaded: LoadedBatch,
) -> Judgement:
    """Score the batch and the champion's reference with the champion, check every column,
    let Evidently measure what can be measured, and decide."""
    settings = config.monitoring
    current = loaded.current
    if current is None or current.frame.empty:
        reason = loaded.reason or "the batch has no rows left to judge"
        return Judgement(Verdict(CANNOT_JUDGE, [reason]), list(current.notes) if current else [])
    notes = list(current.notes)
    numeric, categorical = monitored_columns(config)
    label = config.target.label if current.labelled else None
    lineage = Lineage.from_tags(model.tags, config.data.batch_table, model.version)
    reference = reference_frame(stores.snapshots, lineage, config, model.version)
    reference = sample_rows(reference, settings.reference_max_rows, config.training.seed)
    pipeline = tracker.load_model(model.name, model.version)
    features = config.features.columns
    objective = Objective.of(config)
    classes = objective.model_classes(pipeline) if objective.kind == "multiclass" else None
    reference, _ = score(pipeline, reference, features, objective, classes)
    scored, prediction = score(pipeline, current.frame, features, objective, classes)
    plan = plan_columns(reference, scored, numeric, categorical, current.issues)
    quality: dict[str, float] = {}
    if label is not None:
        quality, why_not = current_quality(scored, label, prediction, objective, classes)
        notes += [why_not] if why_not else []
    snapshot = None
    if plan.columns:
        snapshot = evidently_report(
            reference,
            scored,
            plan,
            settings,
            label,
            loaded.name,
            {"model": f"{model.name}/{model.version}", "batch": loaded.name},
            loaded.timestamp,
            objective.kind,
        )
    figures = figures_from_snapshot(
        snapshot.dict() if snapshot is not None else {},
        plan,
        [*numeric, *categorical],
        settings,
        len(scored),
        len(reference),
        label,
        quality,
        tracker.holdout_metrics(model.run_id).get(f"holdout_{objective.metric}"),
        objective,
    )
    return Judgement(judge(figures, settings), notes, figures, plan, snapshot)


def record(
    tracker: Tracker,
    config: ProjectConfig,
    request: MonitoringRequest,
    model: ModelVersionInfo,
    judgement: Judgement,
    outcome: MonitoringOutcome,
) -> None:
    """The report in the Evidently workspace; a run in MLflow with the figures as metrics and
    Evidently's HTML and JSON beside the verdict's summary. Fills in the outcome's links."""
    settings = config.monitoring
    if judgement.snapshot is not None:
        project_id, snapshot_id = add_to_workspace(
            config.state_dir / settings.workspace_dir,
            f"{config.project} / {model.name}",
            f"Drift of each batch against the data the {model.name} champion was trained on",
            settings.key_features,
            judgement.snapshot,
        )
        outcome.evidently_url = f"{config.stack.evidently_url}/projects/{project_id}/reports/{snapshot_id}"
    lineage_periods = model.tags.get(PERIODS_TAG, "")
    run_id = tracker.record_run(
        run_name=f"{outcome.batch.split('@')[0]} vs v{model.version}",
        tags={
            "pipeline": "monitoring",
            "batch": outcome.batch,
            "verdict": outcome.verdict,
            "model_name": model.name,
            "model_version": model.version,
            "prefect_flow_run_url": outcome.prefect_run_url,
            **({"evidently_url": outcome.evidently_url} if outcome.evidently_url else {}),
        },
        params={
            "source": request.source,
            "period": outcome.period or "",
            "numeric_method": settings.numeric_method,
            "categorical_method": settings.categorical_method,
            "drift_share_threshold": settings.drift_share,
            "key_features": ",".join(settings.key_features),
            "reference_periods": lineage_periods,
        },
        metrics=outcome.figures,
        documents={},
    )
    summary = summary_document(
        judgement.figures,
        judgement.verdict,
        outcome.batch,
        {"name": model.name, "version": model.version, "run_id": model.run_id},
        outcome.notes,
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = render_files(judgement.snapshot, summary, Path(tmp))
        tracker.log_run_files(run_id, list(files.values()), "monitoring")
    outcome.mlflow_run_url = tracker.run_url(run_id)
    if judgement.snapshot is not None:
        outcome.report_url = tracker.artifact_url(run_id, "monitoring/report.html")


def publish(
    outcome: MonitoringOutcome, judgement: Judgement, key_features: list[str], live: Comparison | None = None
) -> None:
    """The verdict where Prefect users look: a markdown artifact, a table of the columns'
    drift and, for the log, a table of each arm's live quality."""
    if live is not None and live.arms:
        create_table_artifact(
            [
                {
                    "arm": arm.arm,
                    "model_version": arm.model_version,
                    "modes": ",".join(arm.modes),
                    "served": arm.served,
                    "logged": arm.logged_rows,
                    "labelled": arm.labelled_rows,
                    **{name: round(value, 4) for name, value in arm.metrics.items()},
                }
                for arm in live.arms
            ],
            key="live-quality",
            description=f"Each arm's quality on its labelled served traffic, {outcome.batch}",
        )
    create_markdown_artifact(
        verdict_markdown(outcome, judgement.figures, judgement.plan),
        key=f"drift-{artifact_key(outcome.batch.split('@')[0])}",
        description=f"Drift verdict for {outcome.batch}: {outcome.verdict}",
    )
    figures = judgement.figures
    if figures is not None and figures.column_scores:
        create_table_artifact(
            [
                {
                    "column": c,
                    "score": round(s, 4),
                    "threshold": figures.column_thresholds[c],
                    "drifted": c in figures.drifted,
                    "key feature": c in key_features,
                }
                for c, s in sorted(figures.column_scores.items(), key=lambda kv: -kv[1])
            ],
            key="drift-columns",
            description=f"Drift score per column, {outcome.batch}",
        )


# -- the flow -----------------------------------------------------------------------------


@flow(name="monitoring")
def monitoring(request: MonitoringRequest = MonitoringRequest()) -> MonitoringOutcome:  # noqa: B008
    logger = get_run_logger()
    config = load_config(request.config_path)
    monitored_columns(config)  # a wrong column name in the config fails before any work
    tracker = Tracker(config.stack.tracking_uri, config.monitoring.experiment)  # fails fast if down
    model = resolve_model(tracker, config, request.model_version)
    stores = Stores.from_config(config)
    if request.source == "landing":
        loaded = load_landing_batch(config, stores, request.period)
    else:
        loaded = load_logged_batch(config, stores, request.first_day, request.last_day)

    judgement = judge_batch(config, tracker, model, stores, loaded)
    figures, plan = judgement.figures, judgement.plan
    outcome = MonitoringOutcome(
        batch=loaded.name,
        period=loaded.period,
        verdict=judgement.verdict.kind,
        reasons=judgement.verdict.reasons,
        model_name=model.name,
        model_version=model.version,
        figures={
            **(figures.metrics() if figures else {"rows": 0.0}),
            **live_figures(loaded.live, paired_metric_name(Objective.of(config))),
        },
        drifted_columns=figures.drifted if figures else [],
        unassessable={i.column: i.reason for i in plan.issues} if plan else {},
        unseen=plan.unseen if plan else {},
        notes=judgement.notes,
        prefect_run_url=prefect_run_url(config),
        metric=config.training.metric,
    )
    record(tracker, config, request, model, judgement, outcome)
    publish(outcome, judgement, config.monitoring.key_features, loaded.live)
    announce(outcome, str(Path(request.config_path).resolve()), request.request_retraining)
    logger.info(
        "%s against v%s: %s (%s)", outcome.batch, model.version, outcome.verdict, "; ".join(outcome.reasons)
    )
    return outcome
