"""The `rollout` flow: a progressive canary with guardrails, ending in the normal promotion.

The challenger's share of the routing keys steps up through `serving.rollout.shares`
(5% → 25% → 50% → 100% by default). Each share is written to the registry (the `rollout`
tag, `mlops.rollout`), where every serving process reads it on its next poll, so nothing
restarts and a service that does restart comes back at the recorded share. A step holds
until the challenger scored `min_requests` rows and `min_seconds` passed; meanwhile the
guardrails (`tasks.rollout`) are checked every `check_seconds` on the service's per-arm
counters and the prediction log, and once labels have joined, on live quality.

A breach takes the challenger out of traffic at once (its alias goes, so the service stops
routing to it on its next poll), records why on the version and in the step's MLflow run,
and emits `mlops.rollout.breached`. Passing the last step runs the promotion flow, whose
gates and decision record decide as for any promotion. One rollout per model at a time: a
Prefect concurrency limit of one slot, refused at once when held. Each step is a row of
the `rollout` table artifact and an MLflow run with the step's live figures.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
import pandas as pd
from prefect import flow, get_run_logger, runtime
from prefect.artifacts import create_table_artifact
from prefect.events import emit_event
from pydantic import BaseModel, Field

from flows.ground_truth import label_served_traffic
from flows.promotion import PromotionDecision, PromotionRequest, promotion
from flows.stages import ensure_lock, hold_lock, prefect_run_url
from mlops.config import OnlineGateConfig, ProjectConfig, RolloutConfig, load_config
from mlops.errors import RolloutError
from mlops.names import CHALLENGER, CHAMPION
from mlops.objective import Objective
from mlops.prediction_log import (
    ARM,
    MODEL_VERSION,
    SCORE,
    SERVED,
    TIMESTAMP,
    read_labelled_log,
    read_prediction_log,
)
from mlops.rollout import ROLLOUT_TAG, RolloutState
from mlops.storage import Stores
from mlops.tracking import Tracker
from tasks.gates import GateResult, OnlineEvidence, online_evidence
from tasks.rollout import ArmWindow, CounterWindow, breached, guardrails, remaining_shares

BREACHED_EVENT = "mlops.rollout.breached"
STEP_EVENT = "mlops.rollout.step-passed"
LOCK_WAIT_SECONDS = 2.0  # a second rollout is refused, not queued
TAG_LIMIT = 5000


class RolloutRequest(BaseModel):
    config_path: str = Field("mlops.yaml", description="Project config file")
    challenger_version: str | None = Field(
        None, description="Version to roll out; default: the one with alias 'challenger'"
    )


@dataclass
class StepResult:
    step: int
    share: float
    started_at: str
    seconds: float
    challenger_rows: int
    guardrails: list[GateResult]
    outcome: str  # passed | breached | too little traffic
    mlflow_run_url: str = ""

    @property
    def reason(self) -> str:
        failed = breached(self.guardrails)
        if failed:
            return "; ".join(f"{g.name} failed: {g.detail or g.summary()}" for g in failed)
        return self.outcome

    def as_row(self) -> dict[str, Any]:
        checks = {g.name.removeprefix("rollout."): g.summary() for g in self.guardrails}
        return {
            "step": self.step,
            "share": f"{self.share:.0%}",
            "outcome": self.outcome,
            "seconds": round(self.seconds, 1),
            "challenger_rows": self.challenger_rows,
            **checks,
            "mlflow_run": self.mlflow_run_url,
        }


@dataclass
class RolloutOutcome:
    model_name: str
    version: str
    result: str  # promoted | rejected | rolled_back
    reason: str
    steps: list[StepResult] = field(default_factory=list)
    decision: PromotionDecision | None = None
    prefect_run_url: str = ""


def lock_name(config: ProjectConfig) -> str:
    return f"rollout-{config.registry.model_name}"


# -- reading the service -----------------------------------------------------------------


def service_model_info(url: str) -> dict[str, Any] | None:
    """The service's `/model` answer, or None when it does not answer (it may be restarting:
    the step goes on and the counters of the process that comes back are read)."""
    try:
        response = httpx.get(f"{url}/model", timeout=10)
        response.raise_for_status()
        return response.json()
    except (httpx.HTTPError, ValueError) as exc:
        get_run_logger().warning("the service at %s did not answer /model: %s", url, exc)
        return None


def serves_share(info: dict[str, Any] | None, version: str, share: float) -> bool:
    if info is None:
        return False
    challenger = (info.get("models") or {}).get("challenger") or {}
    recorded = info.get("challenger_share")
    return challenger.get("version") == version and recorded is not None and abs(recorded - share) < 1e-9


def logged_scores(
    stores: Stores, version: str, champion: str, champion_since: datetime, challenger_since: datetime
) -> tuple[np.ndarray, np.ndarray]:
    """The scores each arm served since it was last measured from: the challenger in this
    step, the champion over the whole rollout."""
    log = read_prediction_log(stores.predictions, champion_since.date(), datetime.now(UTC).date())
    if log.empty:
        return np.empty(0), np.empty(0)
    served = log[log[SERVED].astype(bool)]
    when = pd.to_datetime(served[TIMESTAMP], utc=True)
    version_of = served[MODEL_VERSION].astype(str)
    mine = served[(served[ARM] == CHALLENGER) & (version_of == version) & (when >= challenger_since)]
    theirs = served[(served[ARM] == CHAMPION) & (version_of == champion) & (when >= champion_since)]
    return mine[SCORE].to_numpy(dtype=float), theirs[SCORE].to_numpy(dtype=float)


def live_quality(
    config: ProjectConfig, stores: Stores, version: str, champion: str, since: datetime
) -> OnlineEvidence | None:
    """The challenger's gain on the labelled canary traffic of this rollout (labels landed so
    far joined to the log first), or None when nothing was logged."""
    settings = config.serving.rollout
    today = datetime.now(UTC).date()
    label_served_traffic(config, stores, since.date(), today)
    labelled = read_labelled_log(stores.labelled_predictions, since.date(), today)
    if labelled.empty:
        return None
    labelled = labelled[pd.to_datetime(labelled[TIMESTAMP], utc=True) >= since]
    evidence_settings = OnlineGateConfig(
        min_rows=settings.quality_min_rows,
        days=1,
        required=False,
        bootstrap_resamples=settings.bootstrap_resamples,
        confidence=settings.confidence,
    )
    return online_evidence(
        labelled, version, champion, evidence_settings, Objective.of(config), config.promotion.seed
    )


# -- one step ----------------------------------------------------------------------------


def hold_step(
    config: ProjectConfig,
    stores: Stores,
    version: str,
    champion: str,
    step: int,
    share: float,
    champion_window: CounterWindow,
) -> StepResult:
    """Hold one share until it has its traffic, checking the guardrails as it goes."""
    settings: RolloutConfig = config.serving.rollout
    logger = get_run_logger()
    url = config.serving.url
    opened = time.monotonic()
    deadline = opened + settings.max_seconds
    # The step counts from when the service says it routes at this share (its next poll).
    while not serves_share(info := service_model_info(url), version, share):
        if time.monotonic() > deadline:
            return StepResult(
                step, share, "", time.monotonic() - opened, 0, [], "service never took the share"
            )
        time.sleep(min(settings.check_seconds, 1.0))
    started_at, started = datetime.now(UTC), time.monotonic()
    window = CounterWindow(opened_at=started_at)
    while True:
        if info is not None:
            counters = info["scoring"]["by_arm"]
            window.observe(counters)
            champion_window.observe(counters)
        mine, theirs = window.arm(CHALLENGER), champion_window.arm(CHAMPION)
        scores = logged_scores(stores, version, champion, champion_window.opened_at, started_at)
        elapsed = time.monotonic() - started
        held = mine.rows >= settings.min_requests and elapsed >= settings.min_seconds
        quality = live_quality(config, stores, version, champion, champion_window.opened_at) if held else None
        checks = guardrails(mine, theirs, window.bounds_ms, scores, quality, settings)
        logger.info(
            "step %d (%.0f%%): %d challenger rows, %s",
            step,
            share * 100,
            mine.rows,
            ", ".join(f"{g.name} {g.status}" for g in checks),
        )
        if breached(checks):
            outcome = "breached"
        elif held:
            outcome = "passed"
        elif time.monotonic() > deadline:
            outcome = (
                f"too little traffic: {mine.rows} challenger rows in {settings.max_seconds:.0f} s,"
                f" serving.rollout.min_requests={settings.min_requests}"
            )
        else:
            time.sleep(settings.check_seconds)
            info = service_model_info(url)
            continue
        result = StepResult(
            step, share, started_at.isoformat(timespec="seconds"), elapsed, mine.rows, checks, outcome
        )
        result.mlflow_run_url = record_step(config, version, champion, result, mine, theirs, window.bounds_ms)
        return result


def record_step(
    config: ProjectConfig,
    version: str,
    champion: str,
    result: StepResult,
    mine: ArmWindow,
    theirs: ArmWindow,
    bounds_ms: list[float],
) -> str:
    """One MLflow run per step: its live figures as metrics, its guardrails as a document."""
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    name = config.registry.model_name
    metrics = {
        "share": result.share,
        "seconds": result.seconds,
        **mine.as_metrics("challenger", bounds_ms),
        **theirs.as_metrics("champion", bounds_ms),
        **{g.name.replace(".", "_"): g.value for g in result.guardrails if g.value is not None},
    }
    run_id = tracker.record_run(
        f"rollout v{version} step {result.step} ({result.share:.0%})",
        tags={
            "pipeline": "rollout",
            "model_name": name,
            "model_version": version,
            "outcome": result.outcome[:TAG_LIMIT],
            "prefect_flow_run_url": prefect_run_url(config),
        },
        params={"share": result.share, "step": result.step, "champion_version": champion},
        metrics=metrics,
        documents={
            "rollout/step.json": {**result.as_row(), "guardrails": [g.as_row() for g in result.guardrails]}
        },
    )
    return tracker.run_url(run_id)


# -- the flow ----------------------------------------------------------------------------


def rolled_out(
    tracker: Tracker, config: ProjectConfig, version: str, result: StepResult | None, reason: str
) -> None:
    """Take the challenger out of traffic now, and record why where people look."""
    name = config.registry.model_name
    if tracker.aliases(name).get(CHALLENGER) == version:
        tracker.delete_alias(name, CHALLENGER)
    tracker.delete_model_tag(name, ROLLOUT_TAG)
    at = datetime.now(UTC).isoformat(timespec="seconds")
    where = f"step {result.step} at {result.share:.0%}" if result is not None else "after the last step"
    tracker.set_version_tags(
        name,
        version,
        {
            "rollout": "rolled_back",
            "rollout.reason": reason[:TAG_LIMIT],
            "rollout.at": at,
            "rollout.where": where,
        },
    )
    emit_event(
        event=BREACHED_EVENT,
        resource={
            "prefect.resource.id": f"mlflow.model-version.{name}.{version}",
            "prefect.resource.name": f"{name} v{version}",
        },
        payload={"reason": reason, "where": where, "share": None if result is None else result.share},
    )


def publish(name: str, version: str, steps: list[StepResult], status: str) -> None:
    create_table_artifact(
        [s.as_row() for s in steps],
        key="rollout",
        description=f"{name} v{version} rollout: {status}",
    )


def resolve(
    config: ProjectConfig, tracker: Tracker, requested: str | None
) -> tuple[str, str, RolloutState | None]:
    """The challenger to roll out, the champion it is measured against, and where an
    interrupted rollout of it had got to."""
    name = config.registry.model_name
    if config.serving.mode != "canary":
        raise RolloutError(
            f"serving.mode is {config.serving.mode!r}: a rollout steps the canary share up, so the"
            " service must run with serving.mode: canary"
        )
    aliases, tags = tracker.registry_state(name)
    version = requested or aliases.get(CHALLENGER)
    if version is None:
        raise RolloutError(
            f"model {name!r} has no version with alias {CHALLENGER!r} to roll out: train one (`mlops train`)"
        )
    if aliases.get(CHALLENGER) != version:
        raise RolloutError(
            f"{name} v{version} is not the challenger (alias {CHALLENGER!r} is on"
            f" {aliases.get(CHALLENGER) or 'no version'}): the service routes canary traffic to the challenger only"
        )
    champion = aliases.get(CHAMPION)
    if champion is None or champion == version:
        raise RolloutError(
            f"model {name!r} has no champion other than v{version} to measure the challenger against:"
            " promote one first (`mlops promote`)"
        )
    recorded = RolloutState.from_tags(tags)
    return version, champion, recorded if recorded is not None and recorded.version == version else None


@flow(name="rollout")
def rollout(request: RolloutRequest = RolloutRequest()) -> RolloutOutcome:  # noqa: B008
    logger = get_run_logger()
    config = load_config(request.config_path)
    settings = config.serving.rollout
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    name = config.registry.model_name
    version, champion, resumed = resolve(config, tracker, request.challenger_version)
    lock = lock_name(config)
    ensure_lock(lock)
    busy = RolloutError(
        f"another rollout of {name!r} is running (it holds {lock!r}): wait for it, see the Prefect UI"
    )
    stores = Stores.from_config(config)
    run_url = prefect_run_url(config)
    steps: list[StepResult] = []
    with hold_lock(lock, LOCK_WAIT_SECONDS, busy):
        started_at = resumed.started_at if resumed else datetime.now(UTC).isoformat(timespec="seconds")
        todo = remaining_shares(settings.shares, resumed.share if resumed else None)
        if resumed:
            logger.info(
                "resuming the rollout of v%s at step %d (%.0f%%)", version, todo[0][0], todo[0][1] * 100
            )
        champion_window = CounterWindow(opened_at=datetime.now(UTC))
        for step, share in todo:
            state = RolloutState(
                version, share, step, len(settings.shares), started_at, str(runtime.flow_run.id or "")
            )
            tracker.set_model_tag(name, ROLLOUT_TAG, state.to_tag())
            result = hold_step(config, stores, version, champion, step, share, champion_window)
            steps.append(result)
            if result.outcome != "passed":
                rolled_out(tracker, config, version, result, result.reason)
                publish(name, version, steps, f"rolled back at step {step}")
                logger.warning(
                    "v%s rolled back at step %d (%.0f%%): %s", version, step, share * 100, result.reason
                )
                return RolloutOutcome(name, version, "rolled_back", result.reason, steps, None, run_url)
            publish(name, version, steps, f"step {step} of {len(settings.shares)} passed")
            emit_event(
                event=STEP_EVENT,
                resource={"prefect.resource.id": f"mlflow.model-version.{name}.{version}"},
                payload={"step": step, "share": share},
            )
        # Every step held: the normal gates decide, with the share still at its last step.
        decision = promotion(PromotionRequest(config_path=request.config_path, challenger_version=version))
    if decision.promoted:
        tracker.delete_model_tag(name, ROLLOUT_TAG)
        publish(name, version, steps, "promoted")
        return RolloutOutcome(
            name, version, "promoted", "; ".join(decision.reasons), steps, decision, run_url
        )
    reason = "the promotion gates rejected it: " + "; ".join(decision.reasons)
    rolled_out(tracker, config, version, None, reason)
    publish(name, version, steps, "rejected by the promotion gates")
    return RolloutOutcome(name, version, "rejected", reason, steps, decision, run_url)
