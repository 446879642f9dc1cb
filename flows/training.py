"""The `training-pipeline` flow: landing → snapshot → validated batch → features → model
→ registry. Orchestration lives here: retries, caching, parallelism, artifacts.

Read `training_pipeline` at the bottom first: each stage above it is one step of a batch's
journey, in the order the batch takes.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.runners import stage_runner, submit
from flows.stages import (
    Batch,
    artifact_key,
    batch_fingerprint,
    build_features,
    dimension_frames,
    ingest_batches,
    link_lineage,
    prefect_run_url,
    publish_lineage,
    reject_failed,
    train_candidate,
    validate_batch,
    validate_batches,
)
from mlops.config import ProjectConfig, load_config
from mlops.errors import BadBatchError
from mlops.names import (
    CANDIDATE_TAG,
    CONFIG_FILE,
    CONFIG_HASH_TAG,
    GIT_COMMIT_TAG,
    HOLDOUT_SCORES_FILE,
    INPUTS_FILE,
    PACKAGES_FILE,
    PERIODS_TAG,
    SNAPSHOTS_TAG,
    TRAINING_FINGERPRINT_TAG,
    TRAINING_FRAME_SUMMARY_FILE,
    TRAINING_FRAME_VALIDATION_FILE,
    VALIDATION_SUMMARY_FILE,
    VALIDATION_TAG,
)
from mlops.objective import HEADLINE, NAMES, Objective
from mlops.periods import ANY_PERIOD_PATTERN
from mlops.storage import Stores
from mlops.tracking import RegisteredVersion, Tracker, code_version, skops_types
from tasks.features import Split, TrainingFrame, record_features, time_split
from tasks.lineage_records import config_record, environment_record, validation_record
from tasks.train import CandidateResult, check_candidates, records_model, select_best
from tasks.validate import ValidationReport, load_suite_json, render_data_docs


class TrainingRequest(BaseModel):
    """What to train on. Prefect renders this as the run form in its UI."""

    start: str = Field(
        "2013-01", description="First period of data, in data.cadence's form", pattern=ANY_PERIOD_PATTERN
    )
    end: str = Field("2013-06", description="Last period (the holdout)", pattern=ANY_PERIOD_PATTERN)
    config_path: str = Field("mlops.yaml", description="Project config file")


@dataclass
class TrainingOutcome:
    model_name: str
    model_version: str
    reused: bool  # this data and config were registered before; nothing new was registered
    metrics: dict[str, float]
    mlflow_run_url: str
    model_version_url: str
    prefect_run_url: str
    snapshots: list[str] = field(default_factory=list)


# -- stages -------------------------------------------------------------------------------


def prepare_split(
    config: ProjectConfig, batches: dict[str, Batch], periods: list[str], fingerprint: str
) -> tuple[TrainingFrame, Split, ValidationReport | None]:
    """Join, derive and label the batches, check the labelled frame, split it by time."""
    batch_frames = {p: batches[p].frame for p in periods}
    training = build_features.submit(batch_frames, dimension_frames(batches), config, fingerprint).result()
    report = None
    if config.features.training_suite:
        suite = load_suite_json(config.path(config.expectations_dir), config.features.training_suite)
        report = validate_batch.submit(training.frame, suite, f"training@{fingerprint}", None, None).result()
        if not report.success:
            raise BadBatchError(f"the labelled training frame failed validation:\n{report.summary()}")
    split = time_split(
        training, config.features, config.target.label, config.split.holdout_periods, config.data.time_column
    )
    return training, split, report


def train_candidates(config: ProjectConfig, split: Split) -> tuple[list[CandidateResult], CandidateResult]:
    """Fit every candidate in parallel; pick the best, or fail if none beats the baselines."""
    # Parallelism comes from running candidates side by side; OpenMP threads inside each
    # fit would fight over the same cores (9x slower for small fits on 2 cores, measured).
    # Where they run (threads here, or a Dask cluster) is `compute` in the config.
    objective = Objective.of(config)
    inputs = (split, config.features, config.training, objective, config.split.cv_folds)
    with stage_runner(config.compute) as runner:
        futures = [
            submit(runner, train_candidate, c, *inputs, openmp_threads=1) for c in config.training.candidates
        ]
        results = [f.result() for f in futures]
    best = select_best(results, objective, config.training.min_gain_over_baseline)
    return results, best


# -- recording ----------------------------------------------------------------------------


def target_description(config: ProjectConfig) -> str:
    target = config.target
    if target.kind == "binary":
        return f"{target.column} {target.op} {target.value}"
    if target.kind == "multiclass" and target.classes:
        bins = f" cut at {target.bins}" if target.bins else ""
        return f"{target.column} as classes {target.classes}{bins}"
    return f"{target.column} ({target.kind})"


def record_inputs(tracker: Tracker, batches: dict[str, Batch], holdout: list[str]) -> None:
    """Each snapshot as an MLflow dataset, and the full list (source URI, hash, size, rows)
    as an artifact: MLflow keeps one dataset per name and digest, so the artifact is what
    says where this run's bytes came from."""
    inputs = []
    for label, batch in batches.items():
        if batch.snapshot.period is None:
            context = "dimension"
        else:
            context = "holdout" if label in holdout else "training"
        name = batch.name.split("@")[0]
        tracker.log_dataset(batch.frame, name, batch.snapshot.source_uri, batch.snapshot.sha256, context)
        inputs.append({"name": name, "context": context, **asdict(batch.snapshot)})
    tracker.log_json(inputs, INPUTS_FILE)


def record_validation(tracker: Tracker, reports: list[ValidationReport]) -> None:
    """Each result as JSON, all of them as one GX Data Docs site, and a pass/fail tag."""
    for report in reports:
        tracker.log_json(report.result, f"validation/{artifact_key(report.batch)}.json")
    tracker.log_json(
        [validation_record(r, f"validation/{artifact_key(r.batch)}.json") for r in reports],
        VALIDATION_SUMMARY_FILE,
    )
    with tempfile.TemporaryDirectory() as site:
        if any(render_data_docs(report, Path(site)) for report in reports):
            tracker.log_dir(Path(site), "validation/data_docs")
    tracker.set_tags({VALIDATION_TAG: "passed" if all(r.success for r in reports) else "failed"})


def record_candidates(
    tracker: Tracker, results: list[CandidateResult], metric: str, fingerprint: str
) -> None:
    for r in results:
        assert r.evaluation is not None
        tracker.log_candidate(
            r.name,
            params={"estimator": r.estimator, "baseline": r.baseline, **r.params},
            metrics={
                f"cv_{metric}": r.cv_mean,
                f"cv_{metric}_std": r.cv_std,
                "fit_seconds": r.fit_seconds,
                **{f"holdout_{k}": v for k, v in r.evaluation.metrics.items()},
            },
            plots=r.evaluation.plots,
            extra={"permutation_importance.json": r.evaluation.importance},
            tags={"candidate": r.name, TRAINING_FINGERPRINT_TAG: fingerprint},
        )


def register_best(
    tracker: Tracker,
    config: ProjectConfig,
    best: CandidateResult,
    split: Split,
    batches: dict[str, Batch],
    run_tags: dict[str, str],
) -> RegisteredVersion:
    """Register once per data and config: a rerun finds the version it already made."""
    found = tracker.find_version(config.registry.model_name, split.fingerprint)
    if found is not None and found.complete:
        return found
    assert best.evaluation is not None
    headline = best.evaluation.metrics
    # The run's Prefect links and the holdout metrics stay on the run (and in the description).
    tags = {
        PERIODS_TAG: run_tags[PERIODS_TAG],
        CONFIG_HASH_TAG: run_tags[CONFIG_HASH_TAG],
        GIT_COMMIT_TAG: run_tags[GIT_COMMIT_TAG],
        TRAINING_FINGERPRINT_TAG: split.fingerprint,
        VALIDATION_TAG: "passed",
        CANDIDATE_TAG: best.name,
        SNAPSHOTS_TAG: json.dumps({b.name.split("@")[0]: b.snapshot.sha256 for b in batches.values()}),
    }
    objective = Objective.of(config)
    description = (
        f"{best.name} ({config.target.kind} {config.target.column}) trained on {', '.join(split.train_periods)};"
        f" holdout {', '.join(split.holdout_periods)} {objective.metric_name}"
        f" {headline[objective.metric]:.4f}. Prefect run: {run_tags['prefect_flow_run_url']}"
    )
    if found is not None:  # a run killed while registering it: finish what it started
        return tracker.finish_registration(found, description)
    tracker.log_json(best.evaluation.score_distribution, HOLDOUT_SCORES_FILE)
    # The registered model takes rows as they land: its first step joins and derives them.
    landed = batches[split.holdout_periods[-1]].frame
    dims = {label: b for label, b in batches.items() if b.snapshot.period is None}
    step = record_features(
        config,
        {label: b.frame for label, b in dims.items()},
        landed,
        {label: b.snapshot.sha256 for label, b in dims.items()},
    )
    model = records_model(step, best.pipeline)
    return tracker.register_model(
        model,
        config.registry.model_name,
        landed.head(5)[list(step.inputs or {})],  # its signature: the columns it reads, as they land
        tags,
        description,
        trusted_types=skops_types(model),
    )


def leaderboard_markdown(results: list[CandidateResult], best: CandidateResult, objective: Objective) -> str:
    """Candidates best first by the holdout metric, with the kind's headline metrics."""
    columns = [objective.metric, *(m for m in HEADLINE[objective.kind] if m != objective.metric)]
    names = " | ".join(f"holdout {NAMES.get(m, m)}" for m in columns)
    lines = [
        f"| candidate | baseline | CV {objective.metric} | {names} | fit s |",
        "|---|---|---|" + "---|" * len(columns) + "---|",
    ]
    sign = -1.0 if objective.higher_is_better else 1.0
    for r in sorted(results, key=lambda r: sign * r.evaluation.metrics[objective.metric]):
        m = r.evaluation.metrics
        name = f"**{r.name}** (selected)" if r is best else r.name
        values = " | ".join(f"{m.get(c, float('nan')):.4f}" for c in columns)
        lines.append(
            f"| {name} | {'yes' if r.baseline else ''} | {r.cv_mean:.4f} ± {r.cv_std:.4f} | {values} "
            f"| {r.fit_seconds:.1f} |"
        )
    return "\n".join(lines)


# -- the flow -----------------------------------------------------------------------------


@flow(name="training-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=2))
def training_pipeline(request: TrainingRequest = TrainingRequest()) -> TrainingOutcome:  # noqa: B008
    logger = get_run_logger()
    config = load_config(request.config_path)
    periods = config.data.periods.range(request.start, request.end)
    check_candidates(config)  # a wrong estimator fails here, before any data is read
    stores = Stores.from_config(config)
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)  # fails fast if down
    run_tags = {
        "pipeline": "training",
        PERIODS_TAG: f"{periods[0]}..{periods[-1]}",
        CONFIG_HASH_TAG: config.fingerprint,
        GIT_COMMIT_TAG: code_version(config.root),
        "prefect_flow_run_id": str(runtime.flow_run.id or ""),
        "prefect_flow_run_url": prefect_run_url(config),
    }

    with tracker.pipeline_run(runtime.flow_run.name or "training", run_tags) as run_id:
        tracker.log_params(
            {
                "start": request.start,
                "end": request.end,
                "target": target_description(config),
                "features": ",".join(config.features.columns),
                "candidates": ",".join(c.name for c in config.training.candidates),
                "metric": config.training.metric,
                "seed": config.training.seed,
            }
        )
        # What `mlops reproduce` rebuilds from, and what it blames when metrics differ.
        tracker.log_json(config_record(config), CONFIG_FILE)
        tracker.log_json(environment_record(), PACKAGES_FILE)
        batches = ingest_batches(config, stores, periods)
        record_inputs(tracker, batches, periods[-config.split.holdout_periods :])
        logger.info("ingested %s", ", ".join(f"{b.name} ({b.snapshot.rows} rows)" for b in batches.values()))

        reports = validate_batches(config, batches)
        record_validation(tracker, list(reports.values()))
        reject_failed(stores, batches, reports)

        fingerprint = batch_fingerprint(config, [b.snapshot.sha256 for b in batches.values()])
        training, split, training_report = prepare_split(config, batches, periods, fingerprint)
        if training_report:
            tracker.log_json(training_report.result, TRAINING_FRAME_VALIDATION_FILE)
            tracker.log_json(
                validation_record(training_report, TRAINING_FRAME_VALIDATION_FILE),
                TRAINING_FRAME_SUMMARY_FILE,
            )
        tracker.log_params(
            {
                "train_rows": len(split.X_train),
                "holdout_rows": len(split.X_holdout),
                "unlabelled_rows_dropped": training.unlabelled_rows,
                "train_periods": ",".join(split.train_periods),
                "holdout_periods": ",".join(split.holdout_periods),
                "training_fingerprint": fingerprint,
            }
        )

        results, best = train_candidates(config, split)
        record_candidates(tracker, results, config.training.metric, fingerprint)
        assert best.evaluation is not None
        metrics = {f"holdout_{k}": v for k, v in best.evaluation.metrics.items()}
        tracker.log_metrics(metrics)
        tracker.set_tags({"selected_candidate": best.name})

        registered = register_best(tracker, config, best, split, batches, run_tags)
        outcome = TrainingOutcome(
            model_name=registered.name,
            model_version=registered.version,
            reused=registered.reused,
            metrics=metrics,
            mlflow_run_url=tracker.run_url(run_id),
            model_version_url=tracker.version_url(registered.name, registered.version),
            prefect_run_url=run_tags["prefect_flow_run_url"],
            snapshots=[b.snapshot.uri for b in batches.values()],
        )

    lineage_url = publish_lineage(config, tracker, outcome.model_name, outcome.model_version)
    link_lineage(tracker, outcome.model_name, outcome.model_version, lineage_url)
    reused = " (already registered for this data and config)" if outcome.reused else ""
    create_markdown_artifact(
        f"## {outcome.model_name} v{outcome.model_version}{reused}\n\n"
        f"Periods {periods[0]}..{periods[-1]}: {len(split.X_train)} train rows "
        f"({', '.join(split.train_periods)}), {len(split.X_holdout)} holdout rows "
        f"({', '.join(split.holdout_periods)}); {training.unlabelled_rows} rows without a label dropped.\n\n"
        + leaderboard_markdown(results, best, Objective.of(config))
        + f"\n\n[MLflow run]({outcome.mlflow_run_url}) · [model version]({outcome.model_version_url})",
        key="training-summary",
        description="Candidates, the selected model, and links to MLflow",
    )
    create_link_artifact(
        outcome.model_version_url,
        link_text=f"{outcome.model_name} v{outcome.model_version}",
        key="model-version",
    )
    logger.info("registered %s v%s: %s", outcome.model_name, outcome.model_version, outcome.model_version_url)
    return outcome
