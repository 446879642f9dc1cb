"""The `reproduce` flow: rebuild a registered version from its recorded lineage and say
whether it computes the same numbers.

Same inputs (each snapshot read back by the hash the run recorded; a missing or changed
file stops the run, named), same config (the run's `config/resolved.json`, checked against
the config hash on the version), same seeds (they are in that config), same code path as
the training flow. Two things differ on purpose: the Prefect cache is bypassed, because it
keys on the very fingerprint being reproduced and would hand back the old fit; and nothing
is registered. The outcome (equal, or each difference with its likely cause) is recorded as
an MLflow run, tags on the version and a Prefect artifact.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.runners import stage_runner, submit
from flows.stages import batch_fingerprint, build_features_uncached, prefect_run_url, train_candidate_uncached
from mlops.config import ProjectConfig, load_config
from mlops.errors import ConfigError, TrainingError
from mlops.names import CONFIG_FILE, INPUTS_FILE, PACKAGES_FILE, TRAINING_FINGERPRINT_TAG
from mlops.objective import Objective
from mlops.storage import Stores
from mlops.tracking import RunRecord, Tracker, code_version
from tasks.features import time_split
from tasks.ingest import TimeColumn
from tasks.lineage import read_recorded_snapshots, resolve_version
from tasks.lineage_records import (
    MetricComparison,
    compare_metrics,
    config_from_record,
    environment_record,
    likely_causes,
)
from tasks.train import CandidateResult, select_best

VARIABLE_METRICS = {"fit_seconds"}  # wall time: never the same twice, and not a result


class ReproduceRequest(BaseModel):
    """What to rebuild. Prefect renders this as the run form in its UI."""

    model: str = Field(..., description="<model>/<version> (or <model>@<alias>) to rebuild")
    config_path: str = Field("mlops.yaml", description="Project config file (where stores and servers are)")


@dataclass
class ReproductionOutcome:
    model_name: str
    version: str
    identical: bool
    selected_recorded: str
    selected_reproduced: str
    headline: list[MetricComparison]  # the selected model's holdout metrics
    candidates: list[MetricComparison]  # every candidate's CV and holdout metrics
    predictions_max_abs_diff: float | None  # registered model vs rebuilt one on the holdout
    differences: list[str]
    likely_causes: list[str]
    recorded_commit: str
    current_commit: str
    config_source: str
    snapshots: list[str] = field(default_factory=list)
    seconds: float = 0.0
    mlflow_run_url: str = ""
    prefect_run_url: str = ""


def trained_config(current: ProjectConfig, tracker: Tracker, run: RunRecord) -> tuple[ProjectConfig, str]:
    """The config that trained the run, checked against the hash the run was tagged with."""
    recorded_hash = run.tags.get("config_hash")
    recorded = tracker.read_json(run.run_id, CONFIG_FILE)
    if recorded is not None:
        config, source = config_from_record(current, recorded), f"recorded ({CONFIG_FILE})"
    elif recorded_hash == current.fingerprint:
        # An older run without the file: the current config hashes the same, so it is the same.
        config, source = (
            current,
            f"the current config (same hash {recorded_hash}; {CONFIG_FILE} not recorded)",
        )
    else:
        raise ConfigError(
            f"run {run.run_id} did not record its resolved config ({CONFIG_FILE}) and the current config"
            f" hashes to {current.fingerprint}, not {recorded_hash}: check out the config that trained it"
        )
    if recorded_hash and config.fingerprint != recorded_hash:
        raise ConfigError(
            f"the recorded config hashes to {config.fingerprint}, but the run was tagged config_hash"
            f" {recorded_hash}: the record is inconsistent; the version cannot be reproduced from it"
        )
    return config, source


def rebuild(
    config: ProjectConfig, stores: Stores, inputs: list[dict], recorded_fingerprint: str
) -> tuple[list[CandidateResult], CandidateResult | None, pd.DataFrame, str | None]:
    """Snapshots → features → every candidate, as the training flow computes them, uncached."""
    snapshots = read_recorded_snapshots(stores.snapshots, inputs, TimeColumn.of(config.data))
    fingerprint = batch_fingerprint(config, [s.sha256 for s, _ in snapshots])
    if fingerprint != recorded_fingerprint:
        raise ConfigError(
            f"the recorded snapshots and config give training fingerprint {fingerprint}, but the version"
            f" records {recorded_fingerprint}: its lineage does not describe how it was built"
        )
    batches = {s.period: frame for s, frame in snapshots if s.period is not None}
    dims = {s.table: frame for s, frame in snapshots if s.period is None}
    training = build_features_uncached.submit(batches, dims, config, fingerprint).result()
    split = time_split(
        training, config.features, config.target.label, config.split.holdout_periods, config.data.time_column
    )
    objective = Objective.of(config)
    fit_args = (split, config.features, config.training, objective, config.split.cv_folds)
    with stage_runner(config.compute) as runner:
        futures = [
            submit(runner, train_candidate_uncached, c, *fit_args, openmp_threads=1)
            for c in config.training.candidates
        ]
        results = [f.result() for f in futures]
    try:
        best: CandidateResult | None = select_best(results, objective, config.training.min_gain_over_baseline)
        failure = None
    except TrainingError as exc:
        best, failure = None, str(exc)
    return results, best, split.X_holdout, failure


def candidate_metrics(metric: str, results: list[CandidateResult]) -> dict[str, float]:
    """The per-candidate numbers the training flow logs on its nested runs."""
    out: dict[str, float] = {}
    for r in results:
        assert r.evaluation is not None
        out[f"{r.name}/cv_{metric}"] = r.cv_mean
        out[f"{r.name}/cv_{metric}_std"] = r.cv_std
        out |= {f"{r.name}/holdout_{k}": v for k, v in r.evaluation.metrics.items()}
    return out


def recorded_candidate_metrics(children: list[RunRecord]) -> dict[str, float]:
    return {
        f"{run.tags.get('candidate', run.name)}/{k}": v
        for run in children
        for k, v in run.metrics.items()
        if k not in VARIABLE_METRICS
    }


def outcome_markdown(outcome: ReproductionOutcome) -> str:
    verdict = "IDENTICAL" if outcome.identical else "DIFFERENT"
    lines = [
        f"## Reproduction of {outcome.model_name} v{outcome.version}: {verdict}",
        "",
        f"Config: {outcome.config_source}. Code: recorded `{outcome.recorded_commit}`, now"
        f" `{outcome.current_commit}`. Selected: recorded {outcome.selected_recorded}, now"
        f" {outcome.selected_reproduced}.",
        "",
        "| holdout metric | recorded | reproduced | difference |",
        "|---|---|---|---|",
    ]
    for m in outcome.headline:
        diff = "0" if m.equal else ("-" if m.difference is None else f"{m.difference:+.3g}")
        lines.append(f"| {m.name} | {m.recorded!r} | {m.reproduced!r} | {diff} |")
    lines.append("")
    if outcome.predictions_max_abs_diff is not None:
        lines.append(
            f"Registered model vs rebuilt one on the holdout: max |Δp| = {outcome.predictions_max_abs_diff:.3g}"
        )
    if outcome.differences:
        lines += ["", "### Differences", ""] + [f"- {d}" for d in outcome.differences]
        lines += ["", "### Likely causes", ""] + [f"- {c}" for c in outcome.likely_causes]
    return "\n".join(lines)


@flow(name="reproduce", task_runner=ThreadPoolTaskRunner(max_workers=2))
def reproduce(request: ReproduceRequest) -> ReproductionOutcome:
    started = time.perf_counter()
    logger = get_run_logger()
    current = load_config(request.config_path)
    tracker = Tracker(current.stack.tracking_uri, current.registry.experiment)  # fails fast if down
    version = resolve_version(tracker, request.model)
    name = version.name
    run = tracker.run_record(version.run_id)
    if run is None:
        raise ConfigError(f"{name} v{version.version}: its training run {version.run_id} is gone from MLflow")
    inputs = tracker.read_json(run.run_id, INPUTS_FILE)
    if not inputs:
        raise ConfigError(
            f"{name} v{version.version}: its run {run.run_id} did not record its inputs ({INPUTS_FILE}):"
            " there is nothing to rebuild it from"
        )
    config, config_source = trained_config(current, tracker, run)
    stores = Stores.from_config(config)
    recorded_fingerprint = version.tags.get(TRAINING_FINGERPRINT_TAG) or run.params.get(
        "training_fingerprint", ""
    )
    logger.info(
        "rebuilding %s v%s from %d snapshots (config %s)", name, version.version, len(inputs), config_source
    )

    results, best, X_holdout, failure = rebuild(config, stores, inputs, recorded_fingerprint)
    metric = config.training.metric
    recorded_headline = {k: v for k, v in run.metrics.items() if k.startswith("holdout_")}
    new_headline = {}
    if best is not None and best.evaluation is not None:
        new_headline = {f"holdout_{k}": v for k, v in best.evaluation.metrics.items()}
    headline = compare_metrics(recorded_headline, new_headline)
    per_candidate = compare_metrics(
        recorded_candidate_metrics(tracker.child_runs(run.run_id)), candidate_metrics(metric, results)
    )
    selected_recorded = run.tags.get("selected_candidate") or version.tags.get("candidate", "not recorded")
    selected_now = best.name if best else "none"

    max_diff = None
    if best is not None:
        registered = tracker.load_model(name, version.version)
        diff = np.abs(
            registered.predict_proba(X_holdout)[:, 1] - best.pipeline.predict_proba(X_holdout)[:, 1]
        )
        max_diff = float(diff.max()) if len(diff) else 0.0

    differences = [f"training failed to select a model: {failure}"] if failure else []
    if selected_now != selected_recorded:
        differences.append(f"selected candidate: recorded {selected_recorded}, now {selected_now}")
    differences += [
        f"{m.name}: recorded {m.recorded!r}, reproduced {m.reproduced!r}"
        for m in [*headline, *per_candidate]
        if not m.equal
    ]
    if max_diff:
        differences.append(
            f"the registered model and the rebuilt one disagree by up to {max_diff:.3g} in probability"
        )

    current_env = environment_record()
    recorded_commit = run.tags.get("git_commit", "not recorded")
    current_commit = code_version(current.root)
    causes = (
        likely_causes(
            tracker.read_json(run.run_id, PACKAGES_FILE), current_env, recorded_commit, current_commit
        )
        if differences
        else []
    )
    outcome = ReproductionOutcome(
        model_name=name,
        version=version.version,
        identical=not differences,
        selected_recorded=selected_recorded,
        selected_reproduced=selected_now,
        headline=headline,
        candidates=per_candidate,
        predictions_max_abs_diff=max_diff,
        differences=differences,
        likely_causes=causes,
        recorded_commit=recorded_commit,
        current_commit=current_commit,
        config_source=config_source,
        snapshots=[e["uri"] for e in inputs],
        seconds=round(time.perf_counter() - started, 3),
        prefect_run_url=prefect_run_url(current),
    )
    record(tracker, outcome)
    logger.info(
        "%s v%s reproduced: %s",
        name,
        version.version,
        "identical" if outcome.identical else "; ".join(differences),
    )
    return outcome


def record(tracker: Tracker, outcome: ReproductionOutcome) -> None:
    """A run holding the comparison, a pointer to it on the version, a Prefect artifact. No model."""
    verdict = "identical" if outcome.identical else "different"
    document = asdict(outcome)
    run_id = tracker.record_run(
        f"reproduce v{outcome.version} ({verdict})",
        tags={
            "pipeline": "reproduce",
            "model_name": outcome.model_name,
            "model_version": outcome.version,
            "reproduction": verdict,
            "git_commit": outcome.current_commit,
            "prefect_flow_run_url": outcome.prefect_run_url,
            "prefect_flow_run_id": str(runtime.flow_run.id or ""),
        },
        params={"model": f"{outcome.model_name}/{outcome.version}", "config": outcome.config_source},
        metrics={m.name: m.reproduced for m in outcome.headline if m.reproduced is not None},
        documents={"reproduction/comparison.json": document},
    )
    outcome.mlflow_run_url = tracker.run_url(run_id)
    tracker.set_version_tags(
        outcome.model_name,
        outcome.version,
        {
            "reproduced": verdict,
            "reproduced.mlflow_run_id": run_id,
            "reproduced.commit": outcome.current_commit,
        },
    )
    create_markdown_artifact(
        outcome_markdown(outcome) + f"\n\n[MLflow run]({outcome.mlflow_run_url})",
        key="reproduction",
        description=f"{outcome.model_name} v{outcome.version}: {verdict}",
    )
