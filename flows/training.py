"""The `training-pipeline` flow: landing → snapshot → validated batch → features → model
→ registry. Orchestration lives here: retries, caching, parallelism, artifacts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext
from prefect.futures import wait
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff
from pydantic import BaseModel, Field

from mlops.config import ProjectConfig, load_config, period_range
from mlops.errors import BadBatchError
from mlops.storage import Store, open_store
from mlops.tracking import Tracker, code_version
from tasks.features import build_features, fingerprint_inputs, time_split
from tasks.ingest import Snapshot, ingest_table, quarantine_batch
from tasks.train import CandidateResult, select_best, train_candidate
from tasks.validate import ValidationReport, load_suite_json, validate_batch


class TrainingRequest(BaseModel):
    """What to train on. Prefect renders this as the run form in its UI."""

    start: str = Field(
        "2013-01", description="First month of data, YYYY-MM", pattern=r"^\d{4}-\d{2}$"
    )
    end: str = Field(
        "2013-06", description="Last month (the holdout), YYYY-MM", pattern=r"^\d{4}-\d{2}$"
    )
    config_path: str = Field("mlops.yaml", description="Project config file")


@dataclass
class TrainingOutcome:
    model_name: str
    model_version: str
    reused: bool
    metrics: dict[str, float]
    mlflow_run_url: str
    model_version_url: str
    prefect_run_url: str
    snapshots: list[str] = field(default_factory=list)


def _not_bad_data(task, task_run, state) -> bool:
    """Retry I/O hiccups, never a batch that is simply bad: it will be just as bad next time."""
    try:
        state.result()
    except BadBatchError:
        return False
    except Exception:
        return True
    return False


def _features_cache_key(context: TaskRunContext, parameters: dict) -> str:
    return f"features-{parameters['fingerprint']}"


def _candidate_cache_key(context: TaskRunContext, parameters: dict) -> str:
    # The split's rows are fixed by its fingerprint (snapshot hashes + config hash), so the
    # fingerprint and the candidate's settings determine the fitted model.
    settings = parameters["training"].model_dump_json(exclude={"candidates"})
    blob = f"{parameters['split'].fingerprint}|{parameters['candidate'].model_dump_json()}|{settings}|{parameters['cv_folds']}"
    return "candidate-" + fingerprint_inputs(blob)


# Retries for steps that touch storage; the expensive steps are cached on their input
# hashes so a crashed run, run again, resumes instead of recomputing.
ingest = ingest_table.with_options(
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_not_bad_data,
    cache_policy=NO_CACHE,
)
validate = validate_batch.with_options(
    cache_policy=NO_CACHE
)  # fast, and must rerun on suite changes
features = build_features.with_options(cache_key_fn=_features_cache_key, persist_result=True)
train = train_candidate.with_options(cache_key_fn=_candidate_cache_key, persist_result=True)


def prefect_run_url(config: ProjectConfig) -> str:
    run_id = runtime.flow_run.id
    return f"{config.stack.ui_url}/runs/flow-run/{run_id}" if run_id else ""


def quarantine_failed(
    quarantine: Store, snapshots: Store, snapshot: Snapshot, report: ValidationReport
) -> str:
    """Move a snapshot that failed its suite out of the snapshot store, with the result."""
    uri = quarantine_batch(
        quarantine,
        snapshot.table,
        snapshot.period,
        snapshot.source_uri,
        snapshots.read_bytes(snapshot.key),
        reason=report.summary(),
        details={"validation": report.result, "sha256": snapshot.sha256},
    )
    snapshots.delete(snapshot.manifest_key)
    snapshots.delete(snapshot.key)
    return uri


def validation_table(reports: list[ValidationReport]) -> list[dict]:
    return [
        {
            "batch": r.batch,
            "suite": r.suite,
            "rows": r.rows,
            "expectations": r.evaluated,
            "failed": len(r.failures),
            "result": "passed" if r.success else "FAILED",
        }
        for r in reports
    ]


def leaderboard_markdown(results: list[CandidateResult], best: CandidateResult, metric: str) -> str:
    head = (
        "| candidate | baseline | CV "
        + metric
        + " | holdout ROC-AUC | PR-AUC | F1 | Brier | fit s |\n"
    )
    head += "|---|---|---|---|---|---|---|---|\n"
    rows = []
    for r in sorted(results, key=lambda r: -r.evaluation.metrics["roc_auc"]):
        m = r.evaluation.metrics
        mark = " **(selected)**" if r is best else ""
        rows.append(
            f"| {r.name}{mark} | {'yes' if r.baseline else ''} | {r.cv_mean:.4f} ± {r.cv_std:.4f} | "
            f"{m['roc_auc']:.4f} | {m['pr_auc']:.4f} | {m['f1']:.4f} | {m['brier']:.4f} | {r.fit_seconds:.1f} |"
        )
    return head + "\n".join(rows)


@flow(name="training-pipeline", task_runner=ThreadPoolTaskRunner(max_workers=2), log_prints=True)
def training_pipeline(request: TrainingRequest = TrainingRequest()) -> TrainingOutcome:  # noqa: B008
    logger = get_run_logger()
    config = load_config(request.config_path)
    periods = period_range(request.start, request.end)
    data = config.data
    landing = open_store(config.store_uri(data.landing_uri), data.s3)
    snapshots = open_store(config.store_uri(data.snapshot_uri), data.s3)
    quarantine = open_store(config.store_uri(data.quarantine_uri), data.s3)
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    run_url = prefect_run_url(config)
    expectations = config.path(config.expectations_dir)

    run_tags = {
        "pipeline": "training",
        "prefect_flow_run_id": str(runtime.flow_run.id or ""),
        "prefect_flow_run_url": run_url,
        "periods": f"{periods[0]}..{periods[-1]}",
        "config_hash": config.fingerprint,
        "git_commit": code_version(config.root),
    }
    with tracker.pipeline_run(
        run_name=runtime.flow_run.name or "training", tags=run_tags
    ) as run_id:
        tracker.log_params({"start": request.start, "end": request.end, **_flat_config(config)})

        # 1. Ingest: every period of the batch table and every dimension table, in parallel.
        dim_tables = [name for name in data.tables if name != data.batch_table]
        batch_futures = {
            p: ingest.submit(
                landing,
                snapshots,
                quarantine,
                data.batch_table,
                p,
                data.tables[data.batch_table].key(p),
            )
            for p in periods
        }
        dim_futures = {
            t: ingest.submit(landing, snapshots, quarantine, t, None, data.tables[t].key())
            for t in dim_tables
        }
        wait([*batch_futures.values(), *dim_futures.values()])
        ingested: dict[str, tuple[Snapshot, pd.DataFrame]] = {}
        for label, future in [*batch_futures.items(), *dim_futures.items()]:
            ingested[label] = future.result()  # raises BadBatchError with the quarantine location
        for label, (snapshot, frame) in ingested.items():
            context = (
                "training"
                if label in batch_futures and label not in periods[-config.split.holdout_periods :]
                else ("holdout" if label in batch_futures else "dimension")
            )
            tracker.log_dataset(
                frame,
                f"{snapshot.table}:{snapshot.period or 'static'}",
                snapshot.source_uri,
                snapshot.sha256,
                context,
            )
        logger.info(
            "ingested %d files: %s",
            len(ingested),
            ", ".join(
                f"{s.table}:{s.period or '-'}={s.sha256[:8]} ({s.rows} rows)"
                for s, _ in ingested.values()
            ),
        )

        # 2. Validate each batch against its suite; stop before training on any failure.
        validation_futures = []
        for label, (snapshot, frame) in ingested.items():
            suite_name = data.tables[snapshot.table].suite
            if suite_name is None:
                continue
            suite = load_suite_json(expectations, suite_name)
            batch_name = f"{snapshot.table}/{snapshot.period or 'static'}@{snapshot.sha256[:12]}"
            is_batch = snapshot.table == data.batch_table
            validation_futures.append(
                (
                    label,
                    validate.submit(
                        frame,
                        suite,
                        batch_name,
                        data.time_column if is_batch else None,
                        snapshot.period,
                    ),
                )
            )
        reports = [future.result() for _, future in validation_futures]
        create_table_artifact(
            validation_table(reports),
            key="validation-summary",
            description="Great Expectations results per batch",
        )
        for report in reports:
            tracker.log_json(report.result, f"validation/{report.batch.replace('/', '_')}.json")
        failed = [
            (label, report)
            for (label, _), report in zip(validation_futures, reports, strict=True)
            if not report.success
        ]
        tracker.set_tags({"validation": "failed" if failed else "passed"})
        if failed:
            messages = []
            for label, report in failed:
                uri = quarantine_failed(quarantine, snapshots, ingested[label][0], report)
                messages.append(f"{report.summary()}\n  quarantined at {uri}")
                create_table_artifact(
                    report.rows_for_table(),
                    key=f"failed-{_artifact_key(report.batch)}",
                    description=report.summary().splitlines()[0],
                )
            raise BadBatchError("validation failed, nothing was trained:\n" + "\n".join(messages))

        # 3. Features: join, derive, label, and check the labelled frame too.
        batch_snapshots = {p: ingested[p][0] for p in periods}
        fingerprint = fingerprint_inputs(
            config.fingerprint,
            *(s.sha256 for s in batch_snapshots.values()),
            *(ingested[t][0].sha256 for t in dim_tables),
        )
        training_frame = features.submit(
            {p: ingested[p][1] for p in periods},
            {t: ingested[t][1] for t in dim_tables},
            config,
            fingerprint,
        ).result()
        if config.features.training_suite:
            suite = load_suite_json(expectations, config.features.training_suite)
            report = validate.submit(
                training_frame.frame, suite, f"training@{fingerprint}", None, None
            ).result()
            tracker.log_json(report.result, "validation/training_frame.json")
            if not report.success:
                raise BadBatchError(
                    f"the labelled training frame failed validation:\n{report.summary()}"
                )
        split = time_split(
            training_frame, config.features, config.target.label, config.split.holdout_periods
        )
        tracker.log_params(
            {
                "train_rows": len(split.X_train),
                "holdout_rows": len(split.X_holdout),
                "unlabelled_rows": training_frame.unlabelled_rows,
                "train_periods": ",".join(split.train_periods),
                "holdout_periods": ",".join(split.holdout_periods),
                "training_fingerprint": fingerprint,
            }
        )

        # 4. Train the candidates in parallel; each is a nested MLflow run.
        futures = [
            train.submit(c, split, config.features, config.training, config.split.cv_folds)
            for c in config.training.candidates
        ]
        results: list[CandidateResult] = [f.result() for f in futures]
        for r in results:
            assert r.evaluation is not None
            tracker.log_candidate(
                r.name,
                {"estimator": r.estimator, "baseline": r.baseline, **r.params},
                {
                    "cv_" + config.training.metric: r.cv_mean,
                    "cv_std": r.cv_std,
                    "fit_seconds": r.fit_seconds,
                    **{f"holdout_{k}": v for k, v in r.evaluation.metrics.items()},
                },
                r.evaluation.plots,
                {"permutation_importance.json": r.evaluation.importance},
                {"candidate": r.name, "training_fingerprint": fingerprint},
            )
        best = select_best(results, config.training.metric, config.training.min_gain_over_baseline)
        assert best.evaluation is not None
        headline = {f"holdout_{k}": v for k, v in best.evaluation.metrics.items()}
        tracker.set_tags({"selected_candidate": best.name})
        import mlflow

        mlflow.log_metrics(headline)

        # 5. Register, once per data and config: a rerun finds the version it already made.
        registered = tracker.find_version(config.registry.model_name, fingerprint)
        if registered is None:
            version_tags = {
                "training_fingerprint": fingerprint,
                "config_hash": config.fingerprint,
                "git_commit": run_tags["git_commit"],
                "validation": "passed",
                "candidate": best.name,
                "periods": run_tags["periods"],
                "snapshots": json.dumps(
                    {f"{s.table}:{s.period or 'static'}": s.sha256 for s, _ in ingested.values()}
                ),
                "prefect_flow_run_url": run_url,
                **{k: f"{v:.6f}" for k, v in headline.items()},
            }
            registered = tracker.register_model(
                best.pipeline,
                config.registry.model_name,
                split.X_holdout,
                version_tags,
                description=f"{best.name} trained on {','.join(split.train_periods)}; holdout {','.join(split.holdout_periods)}; "
                f"ROC-AUC {headline['holdout_roc_auc']:.4f}. Prefect run: {run_url}",
            )
        outcome = TrainingOutcome(
            model_name=registered.name,
            model_version=registered.version,
            reused=registered.reused,
            metrics=headline,
            mlflow_run_url=tracker.run_url(run_id),
            model_version_url=tracker.version_url(registered.name, registered.version),
            prefect_run_url=run_url,
            snapshots=[s.uri for s, _ in ingested.values()],
        )

    create_markdown_artifact(
        f"## Training pipeline: {config.registry.model_name} v{outcome.model_version}"
        f"{' (already registered for this data and config)' if outcome.reused else ''}\n\n"
        f"Periods {periods[0]}..{periods[-1]}, train rows {len(split.X_train)}, holdout rows {len(split.X_holdout)}, "
        f"unlabelled rows dropped {training_frame.unlabelled_rows}.\n\n"
        + leaderboard_markdown(results, best, config.training.metric)
        + f"\n\n[MLflow run]({outcome.mlflow_run_url}) · [model version]({outcome.model_version_url})",
        key="training-summary",
        description="Candidates, selected model and links",
    )
    create_link_artifact(
        outcome.model_version_url,
        link_text=f"{outcome.model_name} v{outcome.model_version}",
        key="model-version",
    )
    logger.info(
        "registered %s version %s (%s)",
        outcome.model_name,
        outcome.model_version,
        outcome.model_version_url,
    )
    return outcome


def _artifact_key(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower())[:60]


def _flat_config(config: ProjectConfig) -> dict[str, str]:
    return {
        "config_hash": config.fingerprint,
        "target": f"{config.target.column} {config.target.op} {config.target.value}",
        "features": ",".join(config.features.columns),
        "candidates": ",".join(c.name for c in config.training.candidates),
        "metric": config.training.metric,
        "seed": str(config.training.seed),
    }
