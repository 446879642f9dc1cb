"""The stages every flow shares, and every Prefect task, declared once with its retries,
cache key and run name. The steps themselves are plain functions in `tasks/`; this module
only says how Prefect runs them.

A batch's way through the shared stages, in order: `ingest_batches` (landing → snapshot, bad
files quarantined) → `validate_batches` and `reject_failed` (GX suites; a failing batch is
quarantined and stops the flow) → `dimension_frames` and `batch_fingerprint` (what the
feature stage is built from and cached on). `publish_lineage` attaches a version's chain to
the flow run at the end.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prefect import get_run_logger, runtime, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.context import TaskRunContext
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.tasks import exponential_backoff

from flows.probe import ModelProbe
from mlops.config import ChampionGateConfig, ProjectConfig
from mlops.errors import BadBatchError, MlopsError
from mlops.names import artifact_key, lineage_artifact_key
from mlops.objective import Objective
from mlops.storage import Store, Stores
from mlops.tracking import Tracker
from tasks.drift import Lineage, build_current_frame, build_reference, current_quality, run_report
from tasks.features import build_training_frame, fingerprint_inputs
from tasks.gates import MetricComparison, ProbeResult, compare_with_bootstrap, slice_rows
from tasks.ingest import Snapshot, TimeColumn, ingest_file, quarantine_batch
from tasks.lineage import collect_lineage
from tasks.lineage_render import lineage_markdown
from tasks.train import fit_and_evaluate
from tasks.validate import ValidationReport, load_suite_json, validate_frame

# -- orchestration settings: retries for storage I/O, caches for the expensive steps ------


def _retry_unless_bad_data(task, task_run, state) -> bool:
    """Retry I/O hiccups, never a bad batch: it will be just as bad next time."""
    try:
        state.result()
    except BadBatchError:
        return False
    except Exception:
        return True
    return False


def _ingest_run_name() -> str:
    params = runtime.task_run.parameters
    return f"ingest {params['table']} {params['period'] or ''}".strip()


def _features_cache_key(context: TaskRunContext, parameters: dict) -> str:
    return f"features-{parameters['fingerprint']}"


def _candidate_cache_key(context: TaskRunContext, parameters: dict) -> str:
    # The split's rows are fixed by its fingerprint (snapshot hashes + config hash), so the
    # fingerprint and the candidate's settings determine the fitted model.
    settings = parameters["training"].model_dump_json(exclude={"candidates"})
    candidate = parameters["candidate"].model_dump_json()
    blob = f"{parameters['split'].fingerprint}|{candidate}|{settings}|{parameters['cv_folds']}"
    return "candidate-" + fingerprint_inputs(blob)


# -- the tasks ----------------------------------------------------------------------------
# Names and run names are part of the record (the Prefect UI, the reliability tests), and the
# cache keys are what a rerun on old state hits: keep them stable.

ingest_table = task(
    ingest_file,
    name="ingest_table",
    task_run_name=_ingest_run_name,
    retries=3,
    retry_delay_seconds=exponential_backoff(backoff_factor=2),
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_unless_bad_data,
    cache_policy=NO_CACHE,  # snapshots are content-addressed already: a re-ingest is a no-op
)
# Fast, and must rerun whenever a suite changes.
validate_batch = task(
    validate_frame, name="validate_batch", task_run_name="validate {batch}", cache_policy=NO_CACHE
)
FEATURES = {"name": "build_features", "task_run_name": "build training frame"}
CANDIDATE = {"name": "train_candidate", "task_run_name": "train {candidate.name}"}
build_features = task(build_training_frame, **FEATURES, cache_key_fn=_features_cache_key, persist_result=True)
train_candidate = task(fit_and_evaluate, **CANDIDATE, cache_key_fn=_candidate_cache_key, persist_result=True)
# `mlops reproduce` checks a fit against its rebuild: a cache would hand back the fit itself.
build_features_uncached = task(build_training_frame, **FEATURES, cache_policy=NO_CACHE, persist_result=False)
train_candidate_uncached = task(fit_and_evaluate, **CANDIDATE, cache_policy=NO_CACHE, persist_result=False)

# Monitoring and gate results must reflect the data and registry now, never a cached answer.


@task(task_run_name="rebuild the reference of v{version}", cache_policy=NO_CACHE)
def reference_frame(store: Store, lineage: Lineage, config: ProjectConfig, version: str) -> pd.DataFrame:
    return build_reference(store, lineage, config)


evidently_report = task(
    run_report,
    name="evidently_report",
    task_run_name="evidently report on {name}",
    cache_policy=NO_CACHE,
    persist_result=False,
)


@task(task_run_name="score v{version}", cache_policy=NO_CACHE, persist_result=False)
def score_version(
    model: Any, X: pd.DataFrame, version: str, objective: Objective, classes: Sequence[Any] | None = None
) -> np.ndarray:
    return objective.predict(model, X, classes)


@task(task_run_name="bootstrap the {objective.metric} gain", cache_policy=NO_CACHE, persist_result=False)
def compare_with_champion(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    settings: ChampionGateConfig,
    seed: int,
    objective: Objective,
    classes: Sequence[Any] | None = None,
) -> MetricComparison:
    return compare_with_bootstrap(
        objective, y, challenger, champion, settings.bootstrap_resamples, settings.confidence, seed, classes
    )


compare_slice_column = task(
    slice_rows,
    name="compare_slice_column",
    task_run_name="compare slices by {column}",
    cache_policy=NO_CACHE,
    persist_result=False,
)


@task(task_run_name="time {probe.model_uri} in its own process", cache_policy=NO_CACHE, persist_result=False)
def probe_operational(probe: ModelProbe, rows: pd.DataFrame) -> ProbeResult:
    return probe.measure(rows)


@task(task_run_name="v{version} on {period}", cache_policy=NO_CACHE, persist_result=False)
def model_metric(
    config: ProjectConfig, stores: Stores, model: Any, version: str, period: str
) -> float | None:
    """A model's `training.metric` on a landed period, shaped the way monitoring shapes it."""
    objective = Objective.of(config)
    batches = ingest_batches(config, stores, [period])
    current = build_current_frame(batches[period].frame, dimension_frames(batches), config)
    if not current.labelled or current.frame.empty:
        return None
    classes = objective.model_classes(model) if objective.kind == "multiclass" else None
    prediction = objective.predict(model, current.frame[config.features.columns], classes)
    metrics, _ = current_quality(current.frame, config.target.label, prediction, objective, classes)
    return metrics.get(objective.metric)


# -- the shared stages: landing → snapshot → validated batch ------------------------------


@dataclass(frozen=True)
class Batch:
    """A snapshot and its rows, as it moves through the flow."""

    snapshot: Snapshot
    frame: pd.DataFrame

    @property
    def name(self) -> str:
        return f"{self.snapshot.table}/{self.snapshot.period or 'static'}@{self.snapshot.sha256[:12]}"


def ingest_batches(
    config: ProjectConfig, stores: Stores, periods: list[str], rejected: list[str] | None = None
) -> dict[str, Batch]:
    """Snapshot every period of the batch table and every dimension table, in parallel.
    Keys: the period for batch-table files, the table name for dimension tables. A bad file
    is quarantined and named in a BadBatchError, or, given a `rejected` list, named there
    while the good files go on."""
    data = config.data
    jobs = {p: (data.batch_table, p, data.tables[data.batch_table].key(p)) for p in periods}
    jobs |= {t: (t, None, spec.key()) for t, spec in data.tables.items() if t != data.batch_table}
    times = TimeColumn.of(data)
    futures = {
        label: ingest_table.submit(stores.landing, stores.snapshots, stores.quarantine, *job, times)
        for label, job in jobs.items()
    }
    # Wait for every file before failing, so each bad one is quarantined and named in one run
    # (a BadBatchError names the file and its quarantine location).
    batches: dict[str, Batch] = {}
    bad: list[str] = []
    for label, future in futures.items():
        try:
            batches[label] = Batch(*future.result())
        except BadBatchError as exc:
            bad.append(str(exc))
    if rejected is not None:
        rejected += bad
    elif bad:
        raise BadBatchError("\n".join(bad))
    return batches


def validate_batches(config: ProjectConfig, batches: dict[str, Batch]) -> dict[str, ValidationReport]:
    """Run each table's suite on its batch, in parallel."""
    expectations = config.path(config.expectations_dir)
    futures = {}
    for label, batch in batches.items():
        suite_name = config.data.tables[batch.snapshot.table].suite
        if suite_name is None:
            continue
        partitioned = batch.snapshot.period is not None
        futures[label] = validate_batch.submit(
            batch.frame,
            load_suite_json(expectations, suite_name),
            batch.name,
            config.data.time_column if partitioned else None,
            batch.snapshot.period,
            config.data.periods,
            config.data.timezone,
        )
    reports = {label: future.result() for label, future in futures.items()}
    create_table_artifact(
        [report_row(r) for r in reports.values()],
        key="validation-summary",
        description="Great Expectations result per batch",
    )
    return reports


def reject_failed(stores: Stores, batches: dict[str, Batch], reports: dict[str, ValidationReport]) -> None:
    """Quarantine every batch that failed its suite, then stop the flow naming each failure."""
    failed = {label: r for label, r in reports.items() if not r.success}
    if not failed:
        return
    messages = []
    for label, report in failed.items():
        snapshot = batches[label].snapshot
        uri = quarantine_failed(stores, snapshot, report)
        messages.append(report.rejection_message(snapshot.source_uri, uri))
        create_table_artifact(
            report.rows_for_table(),
            key=f"failed-{artifact_key(report.batch)}",
            description=report.summary().splitlines()[0],
        )
    raise BadBatchError("validation failed, nothing was trained:\n" + "\n".join(messages))


def quarantine_failed(stores: Stores, snapshot: Snapshot, report: ValidationReport) -> str:
    """Move a snapshot that failed its suite out of the snapshot store, with the result."""
    uri = quarantine_batch(
        stores.quarantine,
        snapshot.table,
        snapshot.period,
        snapshot.source_uri,
        stores.snapshots.read_bytes(snapshot.key),
        reason=report.summary(),
        details={"validation": report.result, "sha256": snapshot.sha256},
    )
    stores.snapshots.delete(snapshot.manifest_key)
    stores.snapshots.delete(snapshot.key)
    return uri


def report_row(report: ValidationReport) -> dict[str, object]:
    return {
        "batch": report.batch,
        "suite": report.suite,
        "rows": report.rows,
        "expectations": report.evaluated,
        "failed": len(report.failures),
        "result": "passed" if report.success else "FAILED",
    }


def dimension_frames(batches: dict[str, Batch]) -> dict[str, pd.DataFrame]:
    """The dimension tables' rows by table name (the batches without a period)."""
    return {label: b.frame for label, b in batches.items() if b.snapshot.period is None}


def batch_fingerprint(config: ProjectConfig, sha256s: list[str]) -> str:
    """Names a feature frame: the config and the snapshot hashes it was built from, in any order."""
    return fingerprint_inputs(config.fingerprint, *sorted(sha256s))


# -- recording in Prefect ----------------------------------------------------------------


def publish_lineage(config: ProjectConfig, tracker: Tracker, model_name: str, version: str) -> str | None:
    """Attach the version's chain to this flow run as Markdown, under a key per version (its
    page in the Prefect UI shows the newest chain); returns that page's URL. The model is
    registered by now: a store that cannot be read costs the report (a warning), not the run."""
    stores = Stores.from_config(config)
    try:
        lineage = collect_lineage(tracker, stores.snapshots, stores.predictions, f"{model_name}/{version}")
    except MlopsError as exc:
        get_run_logger().warning("no lineage artifact for %s v%s: %s", model_name, version, exc)
        return None
    key = lineage_artifact_key(model_name, version)
    create_markdown_artifact(
        lineage_markdown(lineage), key=key, description=f"{model_name} v{version}: lineage"
    )
    return f"{config.stack.ui_url}/artifacts/key/{key}"


def link_lineage(tracker: Tracker, model_name: str, version: str, url: str | None) -> None:
    """Point the version's MLflow description at its lineage artifact (once)."""
    info = tracker.model_version(model_name, version) if url else None
    if info is not None and url and url not in info.description:
        tracker.set_version_description(model_name, version, f"{info.description} Lineage: {url}".strip())


def prefect_run_url(config: ProjectConfig) -> str:
    run_id = runtime.flow_run.id
    return f"{config.stack.ui_url}/runs/flow-run/{run_id}" if run_id else ""


# -- one at a time: a Prefect global concurrency limit of one slot ------------------------


def ensure_lock(name: str) -> None:
    """Create the limit (one slot) if missing: `concurrency()` does not wait on a limit that
    does not exist, and a widened or disabled limit would let two holders overlap."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate

    with get_client(sync_client=True) as client:
        try:
            limit = client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                return
            except ObjectAlreadyExists:  # another run created it a moment ago
                limit = client.read_global_concurrency_limit_by_name(name)
        if limit.limit != 1 or not limit.active:
            client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(limit=1, active=True))


@contextmanager
def hold_lock(name: str, timeout_seconds: float, busy: MlopsError) -> Iterator[None]:
    """Hold the slot, or raise `busy` after `timeout_seconds`; strict: a missing limit is an
    error, never a free pass."""
    stack = ExitStack()
    try:
        stack.enter_context(concurrency(name, occupy=1, timeout_seconds=timeout_seconds, strict=True))
    except TimeoutError:
        raise busy from None
    with stack:
        yield
