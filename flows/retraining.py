"""The `retraining` flow: what a drift verdict (or the retraining schedule) sets off.

It trains on the landed months just before a batch, the last of them held out, so that the
batch itself is labelled data neither the champion nor the new version has seen; the
promotion flow then judges the new version against the champion on exactly that batch.
The drift trigger passes the batch that drifted; the schedule passes none (the newest month).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from flows.training import TrainingRequest, training_pipeline
from mlops.config import load_config
from mlops.errors import MlopsError, TrainingError
from mlops.names import CHAMPION
from mlops.periods import ANY_PERIOD_PATTERN
from mlops.storage import Stores
from mlops.tracking import Tracker
from tasks.drift import landed_periods, retraining_window


class RetrainingRequest(BaseModel):
    """What to retrain for. Prefect renders this as the run form in its UI."""

    config_path: str = Field("mlops.yaml", description="Project config file")
    batch: str | None = Field(
        None,
        description="The period that calls for retraining, in data.cadence's form; empty: the newest"
        " landed one. Training uses the periods before it; the promotion judges on it",
        pattern=ANY_PERIOD_PATTERN,
    )
    earliest: str | None = Field(
        None,
        description="Train on no period before this one; empty: monitoring.retrain_window",
        pattern=ANY_PERIOD_PATTERN,
    )
    reason: str = Field("", description="Why (e.g. the drift verdict), kept with the run")
    require_approval: bool | None = Field(
        None, description="Pause the promotion for a human decision; empty: the config"
    )


@dataclass
class RetrainingOutcome:
    batch: str
    periods: list[str]  # trained on these months (the last one held out)
    model_version: str | None = None  # None: nothing was registered
    reused: bool = False  # the same months and config were registered before
    promoted: bool | None = None  # None: no promotion ran
    champion_version: str | None = None  # after the decision
    reasons: list[str] = field(default_factory=list)
    training_run_url: str = ""
    promotion_run_url: str = ""


def judge_challenger(
    config_path: str, batch: str, version: str, require_approval: bool | None
) -> tuple[bool, str | None, list[str], str]:
    """The promotion flow's decision on a new version, judged on the batch."""
    from flows.promotion import PromotionRequest, promotion

    try:
        decision = promotion(
            PromotionRequest(
                config_path=config_path,
                eval_period=batch,
                challenger_version=version,
                require_approval=require_approval,
            )
        )
    except MlopsError as exc:  # e.g. another promotion holds the lock
        return False, None, [f"promotion did not run: {exc}"], ""
    return decision.promoted, decision.champion_version, list(decision.reasons), decision.prefect_run_url


@flow(name="retraining")
def retraining(request: RetrainingRequest = RetrainingRequest()) -> RetrainingOutcome:  # noqa: B008
    logger = get_run_logger()
    config_path = str(Path(request.config_path).resolve())
    config = load_config(config_path)
    stores = Stores.from_config(config)
    periods = config.data.periods
    for given in (request.batch, request.earliest):
        if given:
            periods.require(given)  # a period of another cadence is named before any work
    landed = landed_periods(stores.landing, config.data.tables[config.data.batch_table], periods)
    if request.earliest:
        landed = [p for p in landed if p >= request.earliest]
    batch = request.batch or (landed[-1] if landed else "")
    window = retraining_window(batch, config.monitoring.retrain_window, landed, periods) if batch else []
    outcome = RetrainingOutcome(batch=batch, periods=window)

    if len(window) < 2:
        outcome.reasons = [
            f"nothing to retrain on: {len(window)} landed period(s) before {batch or 'the newest period'}"
            " (training needs one to learn from and one to hold out)"
        ]
    else:
        try:
            trained = training_pipeline(
                TrainingRequest(start=window[0], end=window[-1], config_path=config_path)
            )
        except TrainingError as exc:  # nothing beat the baselines: a finding, not a failure
            outcome.reasons = [f"nothing was registered: {exc}"]
        else:
            outcome.model_version, outcome.reused = trained.model_version, trained.reused
            outcome.training_run_url = trained.prefect_run_url
            champion = (
                Tracker(config.stack.tracking_uri, config.registry.experiment)
                .aliases(config.registry.model_name)
                .get(CHAMPION)
            )
            if trained.reused and trained.model_version == champion:
                outcome.champion_version = champion
                outcome.reasons = [
                    f"nothing new: v{champion}, the champion, was trained on these very periods"
                ]
            else:
                promoted, after, reasons, url = judge_challenger(
                    config_path, batch, trained.model_version, request.require_approval
                )
                outcome.promoted, outcome.champion_version, outcome.promotion_run_url = promoted, after, url
                outcome.reasons = reasons

    decision = (
        "not retrained"
        if outcome.model_version is None
        else "nothing new"
        if outcome.promoted is None
        else f"v{outcome.model_version} {'promoted' if outcome.promoted else 'not promoted'}"
    )
    create_markdown_artifact(
        "\n".join(
            [
                f"## Retraining for {batch or '(no period)'}: {decision}",
                "",
                f"Why: {request.reason or 'requested'}",
                f"Trained on: {', '.join(window) or '-'} (the last one held out); judged on {batch or '-'}.",
                "",
                *[f"- {reason}" for reason in outcome.reasons],
                "",
                *([f"[training run]({outcome.training_run_url})"] if outcome.training_run_url else []),
                *([f"[promotion run]({outcome.promotion_run_url})"] if outcome.promotion_run_url else []),
            ]
        ),
        key="retraining-summary",
        description=f"Retraining for {batch}: {decision}",
    )
    logger.info("retraining for %s: %s (%s)", batch, decision, "; ".join(outcome.reasons))
    return outcome
