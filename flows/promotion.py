"""The `promotion` flow: a challenger earns the `champion` alias by passing gates on the
newest labelled month that neither model saw; the `rollback` flow takes it back.

Read `promotion` at the bottom first. One run: resolve the versions → (lock) read the
champion, load the evaluation month through the training code, score both models from the
registry, run gates 1-5 → optionally pause for a human (gate 6, lock released) → (lock)
compare-and-set the aliases → record the decision in MLflow (version tags and a run with
`promotion/decision.json`) and in Prefect (table and markdown artifacts, an event).
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.states import Running
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.ground_truth import label_served_traffic
from flows.probe import ModelProbe
from flows.runners import stage_runner, submit
from flows.stages import (
    batch_fingerprint,
    build_features,
    compare_slice_column,
    compare_with_champion,
    dimension_frames,
    ensure_lock,
    hold_lock,
    ingest_batches,
    link_lineage,
    prefect_run_url,
    probe_operational,
    publish_lineage,
    reject_failed,
    score_version,
    validate_batches,
)
from mlops.config import ProjectConfig, load_config
from mlops.errors import PromotionError
from mlops.names import (
    CHALLENGER,
    CHAMPION,
    DECISION_FILE,
    FAIRNESS_FILE,
    PERIODS_TAG,
    PREVIOUS,
    PROMOTION_TAG,
    VALIDATION_TAG,
)
from mlops.objective import Objective
from mlops.prediction_log import read_labelled_log
from mlops.storage import Stores
from mlops.tracking import ModelVersionInfo, Tracker
from tasks.gates import (
    ApprovalAnswer,
    GateResult,
    MetricComparison,
    OnlineEvidence,
    ProbeResult,
    SliceRow,
    approval_gate,
    champion_gates,
    data_gate,
    default_eval_period,
    fairness_figures,
    fairness_gates,
    no_champion_slice_gates,
    online_evidence,
    online_gates,
    operational_gates,
    quality_gates,
    require_slice_columns,
    require_unseen,
    skip,
    slice_verdicts,
    verdict,
)

PROBE_ROWS = 500  # eval rows handed to the operational probe (repeated up to its batch size)
TAG_LIMIT = 5000  # MLflow's longest model version tag value


class PromotionRequest(BaseModel):
    """What to judge. Prefect renders this as the run form in its UI."""

    config_path: str = Field("mlops.yaml", description="Project config file")
    eval_period: str | None = Field(
        None,
        description="The newest labelled period neither model trained on, in data.cadence's form;"
        " empty: the period after the challenger's last training period",
    )
    challenger_version: str | None = Field(
        None, description="Model version to judge; empty: the version with alias `challenger`"
    )
    require_approval: bool | None = Field(
        None, description="Pause for a human decision once the automated gates pass; empty: the config"
    )


class ApprovalInput(RunInput):
    """The form the Prefect UI shows on a paused promotion run."""

    approve: bool = Field(False, description="Promote this version to champion")
    reviewer: str = Field(..., min_length=1, description="Who decides")
    comment: str = Field("", description="Why")


@dataclass
class PromotionDecision:
    promoted: bool
    challenger_version: str
    champion_version: str | None  # the champion after the decision
    previous_version: str | None  # the version with alias `previous` after the decision
    gates: list[GateResult]
    reasons: list[str]
    approved_by: str | None = None
    approval_comment: str | None = None
    model_name: str = ""
    compared_with: str | None = None  # the champion the challenger was measured against
    eval_period: str | None = None
    eval_rows: int = 0
    started_at: str = ""
    decided_at: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str = ""
    mlflow_run_url: str = ""
    prefect_run_url: str = ""


@dataclass
class Evaluation:
    """Gates 1-5 for one challenger against the champion of the moment."""

    challenger: ModelVersionInfo
    champion: ModelVersionInfo | None
    eval_period: str | None
    rows: int = 0
    gates: list[GateResult] = field(default_factory=list)
    slices: list[SliceRow] = field(default_factory=list)
    fairness: list[dict[str, Any]] = field(default_factory=list)  # by group, both models
    comparison: MetricComparison | None = None
    probe: ProbeResult | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    online: OnlineEvidence | None = None  # gate 4c's evidence from served traffic, when configured
    blocked: str | None = None  # why nothing was evaluated (the challenger is the champion)

    @property
    def champion_version(self) -> str | None:
        return self.champion.version if self.champion else None

    @property
    def passed(self) -> bool:
        return self.blocked is None and verdict(self.gates)[0]


@dataclass
class RollbackOutcome:
    model_name: str
    rolled_back_version: str
    champion_version: str
    reason: str
    requested_by: str
    mlflow_run_url: str
    prefect_run_url: str


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- serialisation: one Prefect global concurrency limit per model ------------------------


def lock_name(config: ProjectConfig) -> str:
    return f"promotion-{config.registry.model_name}"


def lock_busy(name: str, timeout_seconds: float) -> PromotionError:
    return PromotionError(
        f"another promotion or rollback held the lock {name!r} for over {timeout_seconds:.0f} s:"
        " wait for it (see the Prefect UI) or raise promotion.lock_timeout_seconds"
    )


# -- evaluation: gates 1-5 ----------------------------------------------------------------


def resolve_challenger(tracker: Tracker, model_name: str, requested: str | None) -> ModelVersionInfo:
    version = requested or tracker.aliases(model_name).get(CHALLENGER)
    if version is None:
        raise PromotionError(
            f"model {model_name!r} has no version with alias {CHALLENGER!r}: train one (`mlops train`)"
            " or pass challenger_version"
        )
    info = tracker.model_version(model_name, version)
    if info is None:
        raise PromotionError(f"model {model_name!r} has no version {version!r}")
    return info


def load_eval_data(config: ProjectConfig, period: str) -> tuple[pd.DataFrame, np.ndarray]:
    """The labelled rows of one month, through the training code: snapshot, validate (and
    quarantine a bad batch), join the dimension tables, derive features and label."""
    stores = Stores.from_config(config)
    batches = ingest_batches(config, stores, [period])
    reject_failed(stores, batches, validate_batches(config, batches))
    fingerprint = batch_fingerprint(config, [b.snapshot.sha256 for b in batches.values()])
    batch = {period: batches[period].frame}
    labelled = build_features.submit(batch, dimension_frames(batches), config, fingerprint).result()
    y = labelled.frame[config.target.label].to_numpy()
    Objective.of(config).require_scorable(y, f"evaluation period {period}")
    return labelled.frame[config.features.columns], y


def evaluate(
    config: ProjectConfig, tracker: Tracker, challenger: ModelVersionInfo, eval_period: str | None
) -> Evaluation:
    """Read the champion of the moment and run gates 1-5 against it."""
    name = config.registry.model_name
    champion_version = tracker.aliases(name).get(CHAMPION)
    champion = tracker.model_version(name, champion_version) if champion_version else None
    if champion_version == challenger.version:
        return Evaluation(
            challenger, champion, eval_period, blocked=f"v{challenger.version} is already the champion"
        )
    assert eval_period is not None
    require_unseen(
        eval_period,
        {v.version: v.tags.get(PERIODS_TAG) for v in (challenger, champion) if v is not None},
    )
    # Loads while the data is prepared and the models score; times the model once they are done.
    probe = ModelProbe(
        f"models:/{name}/{challenger.version}", config.promotion.operational, tracker.tracking_uri
    )
    try:
        return run_gates(config, tracker, challenger, champion, eval_period, probe)
    finally:
        probe.close()


def run_gates(
    config: ProjectConfig,
    tracker: Tracker,
    challenger: ModelVersionInfo,
    champion: ModelVersionInfo | None,
    eval_period: str,
    probe: ModelProbe,
) -> Evaluation:
    name = config.registry.model_name
    settings = config.promotion
    champion_version = champion.version if champion else None
    seconds: dict[str, float] = {}
    gates = [data_gate(challenger.tags.get(VALIDATION_TAG))]

    started = time.perf_counter()
    X, y = load_eval_data(config, eval_period)
    seconds["load_eval_data"] = time.perf_counter() - started
    get_run_logger().info(
        "evaluating v%s against %s on %d rows of %s",
        challenger.version,
        f"champion v{champion_version}" if champion else "no champion",
        len(y),
        eval_period,
    )

    started = time.perf_counter()
    objective = Objective.of(config)
    models = {v.version: tracker.load_model(name, v.version) for v in (challenger, champion) if v is not None}
    # Both models answer in one class order, so their probabilities compare column by column.
    classes = objective.model_classes(*models.values()) if objective.kind == "multiclass" else None
    scored = {v: score_version.submit(m, X, v, objective, classes) for v, m in models.items()}
    challenger_answer = scored[challenger.version].result()
    champion_answer = scored[champion.version].result() if champion is not None else None
    seconds["load_and_score_models"] = time.perf_counter() - started
    gates += quality_gates(y, challenger_answer, settings.quality, objective, classes)

    comparison = None
    if champion_answer is not None:
        comparison = compare_with_champion.submit(
            y, challenger_answer, champion_answer, settings.champion, settings.seed, objective, classes
        ).result()
        seconds["bootstrap"] = comparison.seconds
    gates += champion_gates(comparison, settings.champion, champion_version, objective.metric)

    slice_results, slice_rows = evaluate_slices(
        config, X, y, challenger_answer, champion_answer, champion_version, objective, classes
    )
    gates += slice_results
    fairness_results, by_group = evaluate_fairness(
        config, X, y, challenger_answer, champion_answer, champion_version, objective, classes
    )
    gates += fairness_results
    online = None
    if settings.online is not None:
        if champion is not None:
            started = time.perf_counter()
            online = live_evidence(config, challenger.version, champion.version, objective)
            seconds["online_evidence"] = time.perf_counter() - started
        gates += online_gates(online, settings.online, champion_version, objective.kind)

    # Timed alone, after the scoring: beside other work it would measure the contention.
    started = time.perf_counter()
    measured = probe_operational.submit(probe, X.head(PROBE_ROWS)).result()
    seconds["operational_probe"] = time.perf_counter() - started  # its loading overlapped the above
    gates += operational_gates(measured, settings.operational)
    return Evaluation(
        challenger,
        champion,
        eval_period,
        len(y),
        gates,
        slice_rows,
        by_group,
        comparison,
        measured,
        seconds,
        online,
    )


def live_evidence(
    config: ProjectConfig, challenger_version: str, champion_version: str, objective: Objective
) -> OnlineEvidence:
    """Gate 4c's input: the labels landed so far joined to the last `online.days` days of the
    prediction log (the ground-truth stage), then the challenger's live gain from them."""
    settings = config.promotion.online
    assert settings is not None
    stores = Stores.from_config(config)
    last = datetime.now(UTC).date()
    first = last - timedelta(days=settings.days - 1)
    label_served_traffic(config, stores, first, last)
    labelled = read_labelled_log(stores.labelled_predictions, first, last)
    return online_evidence(
        labelled, challenger_version, champion_version, settings, objective, config.promotion.seed
    )


def evaluate_fairness(
    config: ProjectConfig,
    X: pd.DataFrame,
    y: np.ndarray,
    challenger_answer: np.ndarray,
    champion_answer: np.ndarray | None,
    champion_version: str | None,
    objective: Objective,
    classes: Sequence[Any] | None,
) -> tuple[list[GateResult], list[dict[str, Any]]]:
    """Gate 4b: per group column, the gaps between groups (Fairlearn) under their limits and
    against the champion's; returns the gates and both models' by-group table."""
    settings = config.promotion.fairness
    missing = [c for c in settings.groups if c not in X.columns]
    if missing:
        raise PromotionError(
            f"promotion.fairness.groups {missing} are not columns of the evaluation data; use some of {sorted(X.columns)}"
        )
    gates: list[GateResult] = []
    by_group: list[dict[str, Any]] = []
    for column in settings.groups:
        mine = fairness_figures(column, X[column], y, challenger_answer, settings, objective, classes)
        theirs = None
        if champion_answer is not None:
            theirs = fairness_figures(column, X[column], y, champion_answer, settings, objective, classes)
        gates += fairness_gates(mine, theirs, settings, champion_version, objective)
        by_group += [{"model": "challenger", **row} for row in mine.by_group]
        by_group += [
            {"model": f"champion v{champion_version}", **row} for row in (theirs.by_group if theirs else [])
        ]
    return gates, by_group


def evaluate_slices(
    config: ProjectConfig,
    X: pd.DataFrame,
    y: np.ndarray,
    challenger_answer: np.ndarray,
    champion_answer: np.ndarray | None,
    champion_version: str | None,
    objective: Objective,
    classes: Sequence[Any] | None,
) -> tuple[list[GateResult], list[SliceRow]]:
    """Gate 4: one task per slice column, on the task runner `compute` configures; the
    same result as `slice_gates` computes in one go."""
    settings = config.promotion.slices
    require_slice_columns(list(X.columns), settings)
    if champion_answer is None or champion_version is None:
        return no_champion_slice_gates(settings), []
    scores = (y, challenger_answer, champion_answer, settings, objective, classes)
    with stage_runner(config.compute) as runner:
        futures = {c: submit(runner, compare_slice_column, c, X[c], *scores) for c in settings.columns}
        per_column = {column: future.result() for column, future in futures.items()}
    return slice_verdicts(per_column, settings, champion_version)


# -- gate 6: approval ---------------------------------------------------------------------


def ask_for_approval(report: str, timeout_seconds: int, poll_seconds: int) -> ApprovalAnswer | None:
    """Pause until someone answers the form in the Prefect UI (or the API); None on timeout."""
    logger = get_run_logger()
    logger.info("waiting up to %d s for approval in the Prefect UI", timeout_seconds)
    try:
        answer = pause_flow_run(
            wait_for_input=ApprovalInput.with_initial_data(description=report, approve=False),
            timeout=timeout_seconds,
            poll_interval=poll_seconds,
            key="approval",
        )
    except FlowPauseTimeout:
        reopen_after_timeout()
        return None
    return ApprovalAnswer(answer.approve, answer.reviewer, answer.comment, now())


def approval_result(
    required: bool, evaluation: Evaluation, answer: ApprovalAnswer | None, timeout_seconds: int
) -> GateResult:
    if required and evaluation.blocked:
        return skip("approval", f"not asked: {evaluation.blocked}")
    return approval_gate(required, evaluation.passed, answer, timeout_seconds)


def reopen_after_timeout() -> None:
    """The server refuses every move out of an expired pause, so the run could not record its
    rejection or finish; put it back to Running, unless someone cancelled it meanwhile."""
    run_id = runtime.flow_run.id
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run_id).state
        if state is not None and state.is_paused():
            client.set_flow_run_state(run_id, Running(message="approval timed out: rejected"), force=True)


# -- decision: compare-and-set on the aliases ---------------------------------------------


def decide(
    config: ProjectConfig,
    tracker: Tracker,
    evaluation: Evaluation,
    approval: GateResult,
    answer: ApprovalAnswer | None,
    started_at: str,
) -> PromotionDecision:
    """Move the aliases if every gate passed and the champion is still the one compared with."""
    name = config.registry.model_name
    challenger = evaluation.challenger.version
    gates = [*evaluation.gates, approval]
    if evaluation.blocked:
        promoted, reasons = False, [evaluation.blocked]
    else:
        promoted, reasons = verdict(gates)
    aliases = tracker.aliases(name)
    if promoted and aliases.get(CHAMPION) != evaluation.champion_version:
        promoted = False
        reasons = [
            f"the champion moved from {_v(evaluation.champion_version)} to {_v(aliases.get(CHAMPION))}"
            " while this run compared (another promotion or a rollback): run the gates again"
        ]
    if promoted:
        tracker.set_alias(name, CHAMPION, challenger)
        if evaluation.champion_version is not None:
            tracker.set_alias(name, PREVIOUS, evaluation.champion_version)
        aliases = tracker.aliases(name)
    return PromotionDecision(
        promoted=promoted,
        challenger_version=challenger,
        champion_version=aliases.get(CHAMPION),
        previous_version=aliases.get(PREVIOUS),
        gates=gates,
        reasons=reasons,
        approved_by=answer.reviewer if answer and answer.approve else None,
        approval_comment=answer.comment if answer else None,
        model_name=name,
        compared_with=evaluation.champion_version,
        eval_period=evaluation.eval_period,
        eval_rows=evaluation.rows,
        started_at=started_at,
        decided_at=now(),
        seconds={k: round(v, 3) for k, v in evaluation.seconds.items()},
        prefect_run_url=prefect_run_url(config),
    )


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


# -- recording ----------------------------------------------------------------------------


def decision_tags(decision: PromotionDecision) -> dict[str, str]:
    """What the registry's version table shows of a decision, and the run that holds the rest
    (every gate, the reasons, the approval: `promotion/decision.json` and the run's metrics)."""
    return {
        PROMOTION_TAG: "promoted" if decision.promoted else "rejected",
        "promotion.decided_at": decision.decided_at,
        "promotion.compared_with": decision.compared_with or "none",
        "promotion.eval_period": decision.eval_period or "",
        "promotion.mlflow_run_id": decision.mlflow_run_id,
    }


def decision_document(
    decision: PromotionDecision, evaluation: Evaluation, answer: ApprovalAnswer | None, config: ProjectConfig
) -> dict:
    return {
        **asdict(decision),
        "approval": asdict(answer) if answer else None,
        "slices": [asdict(row) for row in evaluation.slices],
        "fairness": evaluation.fairness,
        "online": asdict(evaluation.online) if evaluation.online else None,
        "bootstrap": asdict(evaluation.comparison) if evaluation.comparison else None,
        "probe": asdict(evaluation.probe) if evaluation.probe else None,
        "thresholds": config.promotion.model_dump(mode="json"),
    }


def decision_metrics(evaluation: Evaluation) -> dict[str, float]:
    metrics = {f"gate_{g.name.replace('.', '_')}": g.value for g in evaluation.gates if g.value is not None}
    if evaluation.comparison:
        c = evaluation.comparison
        metrics |= {f"challenger_{c.metric}": c.challenger_value, f"champion_{c.metric}": c.champion_value}
    metrics |= {f"seconds_{k}": v for k, v in evaluation.seconds.items()}
    return {k: float(v) for k, v in metrics.items() if np.isfinite(v)}


def record(
    config: ProjectConfig,
    tracker: Tracker,
    decision: PromotionDecision,
    evaluation: Evaluation,
    answer: ApprovalAnswer | None,
) -> None:
    """The decision as an MLflow run (JSON artifact) and version tags, then in Prefect."""
    name = decision.model_name
    verdict_word = "promoted" if decision.promoted else "rejected"
    decision.mlflow_run_id = tracker.record_run(
        f"promotion v{decision.challenger_version} ({verdict_word})",
        tags={
            "pipeline": "promotion",
            "model_name": name,
            "challenger_version": decision.challenger_version,
            "compared_with": decision.compared_with or "none",
            "promotion": verdict_word,
            "prefect_flow_run_url": decision.prefect_run_url,
            "prefect_flow_run_id": str(runtime.flow_run.id or ""),
        },
        params={"eval_period": decision.eval_period, "eval_rows": decision.eval_rows},
        metrics=decision_metrics(evaluation),
        documents={
            DECISION_FILE: decision_document(decision, evaluation, answer, config),
            **({FAIRNESS_FILE: evaluation.fairness} if evaluation.fairness else {}),
        },
    )
    decision.mlflow_run_url = tracker.run_url(decision.mlflow_run_id)
    # A run that found its challenger already promoted leaves that version's record alone.
    if evaluation.blocked is None:
        tracker.set_version_tags(name, decision.challenger_version, decision_tags(decision))
    if decision.promoted and decision.compared_with:
        tracker.set_version_tags(
            name,
            decision.compared_with,
            {
                "promotion.replaced_by": decision.challenger_version,
                "promotion.replaced_at": decision.decided_at,
            },
        )
    create_table_artifact(
        [g.as_row() for g in decision.gates], key="promotion-gates", description=f"Gates: {verdict_word}"
    )
    if evaluation.slices:
        create_table_artifact(
            [asdict(r) for r in evaluation.slices],
            key="promotion-slices",
            description=f"{Objective.of(config).metric_name} per slice",
        )
    if evaluation.fairness:
        create_table_artifact(
            [
                {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                for row in evaluation.fairness
            ],
            key="promotion-fairness",
            description="Metrics per group (Fairlearn MetricFrame), challenger and champion",
        )
    create_markdown_artifact(
        decision_markdown(decision, tracker), key="promotion-decision", description=f"{name}: {verdict_word}"
    )
    emit_event(
        event=f"mlops.model.{'promoted' if decision.promoted else 'promotion-rejected'}",
        resource={
            "prefect.resource.id": f"mlflow.model-version.{name}.{decision.challenger_version}",
            "prefect.resource.name": f"{name} v{decision.challenger_version}",
        },
        payload={
            "champion_version": decision.champion_version,
            "previous_version": decision.previous_version,
            "reasons": decision.reasons,
            "mlflow_run_url": decision.mlflow_run_url,
        },
    )


def gates_markdown(gates: list[GateResult]) -> str:
    lines = ["| gate | status | value | threshold | detail |", "|---|---|---|---|---|"]
    for g in gates:
        row = g.as_row()
        value = "" if row["value"] is None else f"{row['value']:.4g}"
        status = row["status"] if g.passed or g.skipped else f"**{row['status'].upper()}**"
        detail = str(row["detail"]).replace("|", "/")
        lines.append(f"| {g.name} | {status} | {value} | {row['threshold']} | {detail} |")
    return "\n".join(lines)


def evaluation_markdown(evaluation: Evaluation, name: str) -> str:
    """What a reviewer reads on the approval form."""
    return (
        f"## Promote {name} v{evaluation.challenger.version} over champion"
        f" {_v(evaluation.champion_version)}?\n\n"
        f"Evaluated on {evaluation.rows} labelled rows of {evaluation.eval_period}; all automated"
        f" gates passed.\n\n{gates_markdown(evaluation.gates)}\n"
    )


def decision_markdown(decision: PromotionDecision, tracker: Tracker) -> str:
    name = decision.model_name
    verb = "PROMOTED" if decision.promoted else "REJECTED"
    approval = f"Approved by **{decision.approved_by}**. " if decision.approved_by else ""
    return (
        f"## {name} v{decision.challenger_version}: {verb}\n\n"
        f"Compared with champion {_v(decision.compared_with)} on {decision.eval_rows} rows of"
        f" {decision.eval_period}. Now: champion {_v(decision.champion_version)},"
        f" previous {_v(decision.previous_version)}. {approval}\n\n"
        + "\n".join(f"- {r}" for r in decision.reasons)
        + f"\n\n{gates_markdown(decision.gates)}\n\n"
        f"[MLflow decision run]({decision.mlflow_run_url}) ·"
        f" [model version]({tracker.version_url(name, decision.challenger_version)})"
    )


# -- the flows ----------------------------------------------------------------------------


@flow(name="promotion", task_runner=ThreadPoolTaskRunner(max_workers=2))
def promotion(request: PromotionRequest = PromotionRequest()) -> PromotionDecision:  # noqa: B008
    started_at, started = now(), time.perf_counter()
    logger = get_run_logger()
    config = load_config(request.config_path)
    settings = config.promotion
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)  # fails fast if down
    name = config.registry.model_name
    challenger = resolve_challenger(tracker, name, request.challenger_version)
    eval_period = config.data.periods.require(  # a malformed period fails here, naming its form
        request.eval_period
        or default_eval_period(challenger.version, challenger.tags.get(PERIODS_TAG), config.data.periods)
    )
    require_approval = (
        settings.approval.required if request.require_approval is None else request.require_approval
    )
    lock = lock_name(config)
    ensure_lock(lock)

    answer: ApprovalAnswer | None = None
    if require_approval:
        # The lock is not held while a human decides; the compare-and-set in `decide`
        # catches a champion that moved meanwhile.
        with hold_lock(lock, settings.lock_timeout_seconds, lock_busy(lock, settings.lock_timeout_seconds)):
            evaluation = evaluate(config, tracker, challenger, eval_period)
        if evaluation.passed:
            create_table_artifact(
                [g.as_row() for g in evaluation.gates],
                key="promotion-gates",
                description="Automated gates passed: waiting for approval",
            )
            waited = time.perf_counter()
            answer = ask_for_approval(
                evaluation_markdown(evaluation, name),
                settings.approval.timeout_seconds,
                settings.approval.poll_seconds,
            )
            evaluation.seconds["approval_wait"] = time.perf_counter() - waited
        approval = approval_result(True, evaluation, answer, settings.approval.timeout_seconds)
        with hold_lock(lock, settings.lock_timeout_seconds, lock_busy(lock, settings.lock_timeout_seconds)):
            decision = decide(config, tracker, evaluation, approval, answer, started_at)
    else:
        with hold_lock(lock, settings.lock_timeout_seconds, lock_busy(lock, settings.lock_timeout_seconds)):
            evaluation = evaluate(config, tracker, challenger, eval_period)
            approval = approval_result(False, evaluation, None, settings.approval.timeout_seconds)
            decision = decide(config, tracker, evaluation, approval, None, started_at)

    decision.seconds["total"] = round(time.perf_counter() - started, 3)
    evaluation.seconds["total"] = decision.seconds["total"]
    record(config, tracker, decision, evaluation, answer)
    # The chain now ends with this decision (and, if promoted, a period as champion).
    lineage_url = publish_lineage(config, tracker, name, decision.challenger_version)
    link_lineage(tracker, name, decision.challenger_version, lineage_url)
    logger.info(
        "%s v%s: %s (%s)",
        name,
        decision.challenger_version,
        "promoted" if decision.promoted else "rejected",
        "; ".join(decision.reasons),
    )
    return decision


@flow(name="rollback")
def rollback(
    config_path: str = "mlops.yaml", reason: str = "", requested_by: str | None = None
) -> RollbackOutcome:
    """Move `champion` back to `previous`; the version rolled back from keeps the record why."""
    if not reason.strip():
        raise PromotionError("a rollback needs a reason (--reason TEXT): it is recorded on both versions")
    config = load_config(config_path)
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    name = config.registry.model_name
    who = requested_by or getpass.getuser()
    lock = lock_name(config)
    ensure_lock(lock)
    with hold_lock(
        lock, config.promotion.lock_timeout_seconds, lock_busy(lock, config.promotion.lock_timeout_seconds)
    ):
        aliases = tracker.aliases(name)
        current, previous = aliases.get(CHAMPION), aliases.get(PREVIOUS)
        if current is None:
            raise PromotionError(f"model {name!r} has no champion: nothing to roll back")
        if previous is None:
            raise PromotionError(
                f"model {name!r} has no version with alias {PREVIOUS!r} to roll back to (champion is"
                f" v{current}): promote a version with `mlops promote` instead"
            )
        tracker.set_alias(name, CHAMPION, previous)
        # `previous` would now name the version just rolled back from: a second rollback must
        # not bring it back, so the alias goes.
        tracker.delete_alias(name, PREVIOUS)
    at = now()
    run_url = prefect_run_url(config)
    run_id = tracker.record_run(
        f"rollback v{current} -> v{previous}",
        tags={"pipeline": "rollback", "model_name": name, "prefect_flow_run_url": run_url},
        params={"from_version": current, "to_version": previous, "reason": reason, "requested_by": who},
        metrics={},
        documents={
            "rollback/decision.json": {
                "model_name": name,
                "from_version": current,
                "to_version": previous,
                "reason": reason,
                "requested_by": who,
                "at": at,
                "prefect_run_url": run_url,
            }
        },
    )
    common = {
        "rollback.reason": reason[:TAG_LIMIT],
        "rollback.by": who,
        "rollback.at": at,
        "rollback.mlflow_run_id": run_id,
    }
    tracker.set_version_tags(name, current, {"promotion": "rolled_back", "rollback.to": previous, **common})
    tracker.set_version_tags(name, previous, {"rollback.restored_from": current, **common})
    outcome = RollbackOutcome(name, current, previous, reason, who, tracker.run_url(run_id), run_url)
    create_markdown_artifact(
        f"## {name}: champion rolled back from v{current} to v{previous}\n\n"
        f"By {who} at {at}: {reason}\n\n[MLflow run]({outcome.mlflow_run_url})",
        key="rollback",
        description=f"{name} v{current} -> v{previous}",
    )
    emit_event(
        event="mlops.model.rolled-back",
        resource={
            "prefect.resource.id": f"mlflow.model-version.{name}.{previous}",
            "prefect.resource.name": f"{name} v{previous}",
        },
        payload={"from_version": current, "reason": reason, "requested_by": who},
    )
    return outcome
