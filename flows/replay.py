"""The `replay` flow: production played month by month over landed data, the whole loop.

Bootstrap: train on the first months (three by default) and make that version the champion
(the best candidate, even when it does not beat the baselines by the project's margin: a
replay needs a model to start from, and the note says so). Then, for
every later month: monitor it against the champion; when the verdict says retrain, run the
retraining flow (train on the months before, let the promotion gates judge on this month);
move on. The timeline (a table and a plot of the champion's metric on each period, with the
decisions marked, beside the bootstrap model that was never retrained) goes to MLflow and
to a Prefect artifact.

The replay works in its own registry namespace (`<model_name>-replay`, and `-replay`
experiments), so it can never move the real `champion` alias; its snapshots and caches are
shared with the real pipeline, which makes a second replay fast.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from flows.monitoring import MonitoringOutcome, MonitoringRequest, monitoring
from flows.retraining import RetrainingOutcome, RetrainingRequest, retraining
from flows.stages import model_metric, prefect_run_url
from flows.training import TrainingOutcome, TrainingRequest
from flows.training import training_pipeline as training_flow
from mlops.config import ProjectConfig, load_config, save_config
from mlops.errors import ConfigError, LandingError, NoBetterThanBaselineError
from mlops.names import CHAMPION, PREVIOUS
from mlops.objective import NAMES
from mlops.periods import ANY_PERIOD_PATTERN
from mlops.storage import Stores
from mlops.tracking import Tracker
from tasks.drift import landed_periods

REPLAY_SUFFIX = "-replay"


class ReplayRequest(BaseModel):
    """Which periods to play. Prefect renders this as the run form in its UI."""

    config_path: str = Field("mlops.yaml", description="Project config file")
    start: str = Field(
        "2013-01", description="First period, in data.cadence's form", pattern=ANY_PERIOD_PATTERN
    )
    end: str = Field("2013-12", description="Last period", pattern=ANY_PERIOD_PATTERN)
    bootstrap_months: int = Field(3, ge=2, description="Periods the first model is trained on")


@dataclass
class TimelineRow:
    period: str
    champion_version: str  # the champion that met this month
    verdict: str
    drift_share: float | None
    drifted_columns: list[str]
    champion_metric: float | None  # training.metric on this month
    frozen_metric: float | None  # the bootstrap model, never retrained, on this month
    retrained_version: str | None = None
    decision: str = "-"  # promoted | rejected | not registered | nothing to retrain on | -
    champion_after: str = ""
    reasons: list[str] = field(default_factory=list)


@dataclass
class ReplayOutcome:
    start: str
    end: str
    model_name: str  # the replay's own registered model
    bootstrap_version: str
    bootstrap_periods: list[str]
    rows: list[TimelineRow]
    notes: list[str] = field(default_factory=list)
    timeline_png: str = ""  # local copy under the state folder
    mlflow_run_url: str = ""
    prefect_run_url: str = ""
    config_path: str = ""  # the replay's config (its own registry names)
    metric: str = "roc_auc"  # training.metric: what the timeline follows

    def mean(self, column: str) -> float | None:
        values = [getattr(r, column) for r in self.rows if getattr(r, column) is not None]
        return float(np.mean(values)) if values else None


# -- steps --------------------------------------------------------------------------------


def replay_config(config: ProjectConfig) -> ProjectConfig:
    """The same pipeline under its own registry names, so a replay never touches the champion."""
    registry = config.registry.model_copy(
        update={
            "model_name": config.registry.model_name + REPLAY_SUFFIX,
            "experiment": config.registry.experiment + REPLAY_SUFFIX,
        }
    )
    settings = config.monitoring.model_copy(
        update={"experiment": config.monitoring.experiment + REPLAY_SUFFIX}
    )
    return config.model_copy(update={"registry": registry, "monitoring": settings})


def bootstrap(
    config: ProjectConfig, config_path: str, periods: list[str]
) -> tuple[TrainingOutcome, list[str]]:
    """The first champion, trained on `periods`. Production needs a model to start from, so
    if no candidate beats the baselines by the project's margin, the best one is registered
    anyway (the fits are cached: only the selection runs again), and a note says so."""
    request = TrainingRequest(start=periods[0], end=periods[-1], config_path=config_path)
    try:
        return training_flow(request), []
    except NoBetterThanBaselineError as exc:
        note = f"bootstrap on {periods[0]}..{periods[-1]}: {exc}; registered the best candidate anyway"
    relaxed = config.model_copy(
        update={"training": config.training.model_copy(update={"min_gain_over_baseline": -1.0})}
    )
    path = save_config(relaxed, Path(config_path).with_name("bootstrap.yaml"))
    return training_flow(request.model_copy(update={"config_path": str(path)})), [note]


def decision_of(retrained: RetrainingOutcome) -> str:
    if retrained.model_version is None:
        return "nothing to retrain on" if len(retrained.periods) < 2 else "not registered"
    if retrained.promoted is None:
        return "nothing new"  # the window was the champion's own months
    return "promoted" if retrained.promoted else "rejected"


def timeline_frame(rows: list[TimelineRow]) -> pd.DataFrame:
    frame = pd.DataFrame([asdict(r) for r in rows])
    frame["drifted_columns"] = frame["drifted_columns"].map(", ".join)
    frame["reasons"] = frame["reasons"].map(" | ".join)
    return frame


MARKS = {  # decision -> (marker, colour, legend)
    "promoted": ("^", "tab:green", "retrained, promoted"),
    "rejected": ("x", "tab:red", "retrained, rejected by the gates"),
    "not registered": ("D", "tab:purple", "retrained, nothing beat the baselines"),
    "nothing to retrain on": ("o", "tab:grey", "retrain asked, no new months"),
    "nothing new": ("o", "tab:grey", "retrain asked, no new months"),
}


def timeline_png(outcome: ReplayOutcome) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = outcome.rows
    x = np.arange(len(rows))
    champion = [np.nan if r.champion_metric is None else r.champion_metric for r in rows]
    frozen = [np.nan if r.frozen_metric is None else r.frozen_metric for r in rows]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(rows) + 2), 4.2))
    ax.plot(x, champion, "-o", color="tab:blue", label="champion of the month (the loop)")
    ax.plot(
        x,
        frozen,
        "--s",
        color="tab:orange",
        label=f"trained on {outcome.bootstrap_periods[0]}..{outcome.bootstrap_periods[-1]}, never retrained",
    )
    seen = set()
    for i, row in enumerate(rows):
        if row.decision in MARKS and not np.isnan(champion[i]):
            marker, colour, legend = MARKS[row.decision]
            ax.scatter(
                [i],
                [champion[i]],
                marker=marker,
                s=120,
                color=colour,
                zorder=3,
                label=None if legend in seen else legend,
            )
            seen.add(legend)
        if row.verdict.endswith("_retrain"):
            ax.axvspan(i - 0.4, i + 0.4, color="tab:red", alpha=0.06, lw=0)
    ax.set_xticks(x, [r.period for r in rows], rotation=45, ha="right")
    ax.set_ylabel(f"{NAMES.get(outcome.metric, outcome.metric)} on the period")
    ax.set_title(f"{outcome.model_name}: replay {outcome.start}..{outcome.end} (shaded: retraining asked)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=2, frameon=False)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def timeline_markdown(outcome: ReplayOutcome) -> str:
    loop, frozen = outcome.mean("champion_metric"), outcome.mean("frozen_metric")
    name = NAMES.get(outcome.metric, outcome.metric)
    lines = [
        f"## Replay {outcome.start}..{outcome.end}: {outcome.model_name}",
        "",
        f"Bootstrap v{outcome.bootstrap_version} on {', '.join(outcome.bootstrap_periods)}.",
    ]
    if loop is not None and frozen is not None:
        lines.append(
            f"Mean {name} over the monitored periods: **{loop:.4f}** with the loop, {frozen:.4f} never"
            f" retrained ({loop - frozen:+.4f})."
        )
    lines += [
        *[f"_{note}_" for note in outcome.notes],
        "",
        "| period | champion | verdict | drift share |"
        f" champion {name} | never retrained | retrained | decision | champion after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in outcome.rows:
        lines.append(
            f"| {r.period} | v{r.champion_version} | {r.verdict} | {_fmt(r.drift_share)} | {_fmt(r.champion_metric)}"
            f" | {_fmt(r.frozen_metric)} | {'v' + r.retrained_version if r.retrained_version else '-'}"
            f" | {r.decision} | v{r.champion_after} |"
        )
    lines += ["", f"[MLflow run with the plot]({outcome.mlflow_run_url})"]
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def record(tracker: Tracker, outcome: ReplayOutcome, png: bytes, folder: Path) -> str:
    run_id = tracker.record_run(
        run_name=f"replay {outcome.start}..{outcome.end}",
        tags={
            "pipeline": "replay",
            "model_name": outcome.model_name,
            "prefect_flow_run_url": outcome.prefect_run_url,
        },
        params={
            "start": outcome.start,
            "end": outcome.end,
            "bootstrap_periods": ",".join(outcome.bootstrap_periods),
        },
        metrics={
            k: v
            for k, v in {
                f"mean_champion_{outcome.metric}": outcome.mean("champion_metric"),
                f"mean_frozen_{outcome.metric}": outcome.mean("frozen_metric"),
                "retrainings": float(sum(r.retrained_version is not None for r in outcome.rows)),
                "promotions": float(sum(r.decision == "promoted" for r in outcome.rows)),
            }.items()
            if v is not None
        },
        documents={},
    )
    # One step per month, so the MLflow UI draws both curves over the months.
    series: dict[str, list[tuple[int, float]]] = {
        f"champion_{outcome.metric}": [],
        f"frozen_{outcome.metric}": [],
        "drift_share": [],
    }
    for step, row in enumerate(outcome.rows):
        for name, value in (
            (f"champion_{outcome.metric}", row.champion_metric),
            (f"frozen_{outcome.metric}", row.frozen_metric),
            ("drift_share", row.drift_share),
        ):
            if value is not None:
                series[name].append((step, value))
    tracker.log_metric_steps(run_id, series)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "timeline.png").write_bytes(png)
    (folder / "timeline.json").write_text(json.dumps(asdict(outcome), indent=2, default=str))
    timeline_frame(outcome.rows).to_csv(folder / "timeline.csv", index=False)
    tracker.log_run_files(
        run_id, [folder / n for n in ("timeline.png", "timeline.json", "timeline.csv")], "replay"
    )
    return run_id


# -- the flow -----------------------------------------------------------------------------


@flow(name="replay")
def replay(request: ReplayRequest = ReplayRequest()) -> ReplayOutcome:  # noqa: B008
    logger = get_run_logger()
    base = load_config(request.config_path)
    periods = base.data.periods.range(request.start, request.end)
    if len(periods) <= request.bootstrap_months:
        raise ConfigError(
            f"{request.start}..{request.end} has {len(periods)} period(s): the bootstrap takes"
            f" {request.bootstrap_months}, leaving none to monitor"
        )
    stores = Stores.from_config(base)
    landed = set(landed_periods(stores.landing, base.data.tables[base.data.batch_table], base.data.periods))
    missing = [p for p in periods if p not in landed]
    if missing:
        raise LandingError(
            f"periods {missing} are not in the landing zone {stores.landing.uri}:"
            f" run `mlops seed --start {request.start} --end {request.end}`"
        )
    config = replay_config(base)
    folder = base.state_dir / "replay" / f"{request.start}_{request.end}"
    config_path = str(save_config(config, folder / "mlops.yaml"))
    tracker = Tracker(config.stack.tracking_uri, config.monitoring.experiment)
    name = config.registry.model_name

    bootstrap_periods = periods[: request.bootstrap_months]
    first, notes = bootstrap(config, config_path, bootstrap_periods)
    tracker.set_alias(name, CHAMPION, first.model_version)  # the replay's starting point, not a gate decision
    if PREVIOUS in tracker.aliases(name):
        tracker.delete_alias(name, PREVIOUS)  # left by an earlier replay
    frozen_model = tracker.load_model(name, first.model_version)
    outcome = ReplayOutcome(
        start=request.start,
        end=request.end,
        model_name=name,
        bootstrap_version=first.model_version,
        bootstrap_periods=bootstrap_periods,
        rows=[],
        notes=notes,
        prefect_run_url=prefect_run_url(config),
        config_path=config_path,
        metric=config.training.metric,
    )

    for period in periods[len(bootstrap_periods) :]:
        checked: MonitoringOutcome = monitoring(
            MonitoringRequest(config_path=config_path, period=period, request_retraining=False)
        )
        frozen = (
            checked.current_metric
            if checked.model_version == first.model_version
            else model_metric(config, stores, frozen_model, first.model_version, period)
        )
        row = TimelineRow(
            period=period,
            champion_version=checked.model_version,
            verdict=checked.verdict,
            drift_share=checked.figures.get("drift_share"),
            drifted_columns=checked.drifted_columns,
            champion_metric=checked.current_metric,
            frozen_metric=frozen,
            reasons=checked.reasons,
        )
        if checked.retrain:
            retrained = retraining(
                RetrainingRequest(
                    config_path=config_path,
                    batch=period,
                    earliest=request.start,
                    reason=f"{checked.verdict} on {period}",
                    require_approval=False,
                )
            )
            row.retrained_version = retrained.model_version
            row.decision = decision_of(retrained)
            row.reasons = [*row.reasons, *retrained.reasons]
        row.champion_after = tracker.aliases(name).get(CHAMPION, "")
        outcome.rows.append(row)
        logger.info(
            "%s: %s against v%s (%s %s, never retrained %s) -> %s",
            period,
            row.verdict,
            row.champion_version,
            outcome.metric,
            _fmt(row.champion_metric),
            _fmt(row.frozen_metric),
            row.decision,
        )

    png = timeline_png(outcome)
    outcome.timeline_png = str(folder / "timeline.png")
    run_id = record(tracker, outcome, png, folder)
    outcome.mlflow_run_url = tracker.run_url(run_id)
    create_table_artifact(
        timeline_frame(outcome.rows).drop(columns=["reasons"]).to_dict(orient="records"),
        key="replay-timeline",
        description=f"Replay {request.start}..{request.end}: one row per monitored month",
    )
    create_markdown_artifact(
        timeline_markdown(outcome),
        key="replay-summary",
        description="The loop against a model never retrained",
    )
    return outcome
