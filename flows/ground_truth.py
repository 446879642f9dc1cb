"""The `ground-truth` flow: labels that have landed, joined to the traffic the service logged.

One run: list the days the prediction log holds (or those asked for) → ingest and validate
every landed period of the batch table, as training does (a bad file or a failing batch is
quarantined, and its labels are not used) → one label per record key → each day of the log
joined to them and written to the labelled log, replacing that day whole → a table in the
Prefect UI: rows per arm and model version, joined or why not.

Monitoring of the log (`mlops monitor --log`) runs the same stage first, so it always judges
the newest labels; `mlops compare` and the online gate read what this flow wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from flows.stages import ingest_batches, quarantine_failed, validate_batches
from mlops.config import ProjectConfig, load_config
from mlops.errors import ConfigError
from mlops.prediction_log import LABEL_STATUSES, log_days, read_prediction_log, write_labelled_day
from mlops.storage import Stores
from tasks.drift import landed_periods
from tasks.ground_truth import Labels, batch_labels, collect_labels, join_counts, join_ground_truth


class GroundTruthRequest(BaseModel):
    """Which days of the prediction log to label. Prefect renders this as the run form."""

    config_path: str = Field("mlops.yaml", description="Project config file")
    first_day: date | None = Field(None, description="First day of the log (UTC); empty: its first")
    last_day: date | None = Field(None, description="Last day of the log (UTC); empty: its last")


@dataclass
class GroundTruthOutcome:
    days: list[str]  # the log's days joined, YYYY-MM-DD
    periods: list[str]  # the batches whose labels were used
    rejected: list[str] = field(default_factory=list)  # batches left out, and why
    rows: dict[str, int] = field(default_factory=dict)  # label status -> rows (and "logged")
    by_arm: list[dict[str, object]] = field(default_factory=list)  # per arm and version
    labelled_log_uri: str = ""

    @property
    def joined_rows(self) -> int:
        return self.rows.get("joined", 0)


def validated_labels(config: ProjectConfig, stores: Stores) -> tuple[Labels, list[str], list[str]]:
    """The labels of every landed period that passes ingest and validation; returns them,
    the periods used, and what was left out (quarantined) and why."""
    spec = config.data.tables[config.data.batch_table]
    periods = landed_periods(stores.landing, spec, config.data.periods)
    rejected: list[str] = []
    batches = ingest_batches(config, stores, periods, rejected)
    reports = validate_batches(config, batches)
    used = []
    for period in periods:
        if period not in batches:
            continue  # unreadable: quarantined by the ingest, named in `rejected`
        report = reports.get(period)
        if report is not None and not report.success:
            uri = quarantine_failed(stores, batches[period].snapshot, report)
            rejected.append(f"{batches[period].name} failed validation, quarantined in {uri}")
            continue
        used.append(period)
    labels = collect_labels(batch_labels(batches[p].frame, config) for p in used)
    return labels, used, rejected


@task(task_run_name="label the log of {day}", retries=3, retry_delay_seconds=2, cache_policy=NO_CACHE)
def label_day(stores: Stores, day: date, labels: Labels) -> list[dict[str, object]]:
    """One day of the log joined to the labels, written over that day of the labelled log."""
    joined = join_ground_truth(read_prediction_log(stores.predictions, day, day), labels)
    write_labelled_day(stores.labelled_predictions, day, joined)
    return join_counts(joined)


def label_served_traffic(
    config: ProjectConfig, stores: Stores, first: date | None, last: date | None
) -> GroundTruthOutcome:
    """The stage: join the labels landed so far to the log's days in [first, last]."""
    if first is not None and last is not None and last < first:
        raise ConfigError(f"the last day {last} is before the first day {first}")
    days = log_days(stores.predictions, first, last)
    uri = stores.labelled_predictions.uri
    if not days:
        empty = GroundTruthOutcome([], [], labelled_log_uri=uri)
        publish(empty)
        return empty
    labels, used, rejected = validated_labels(config, stores)
    per_day = [label_day.submit(stores, day, labels) for day in days]
    counts = pd.DataFrame([row for future in per_day for row in future.result()])
    by_arm: list[dict[str, object]] = []
    rows = {"logged": 0, **dict.fromkeys(LABEL_STATUSES, 0)}
    if len(counts):
        summed = counts.groupby(["arm", "model_version"], sort=True).sum(numeric_only=True).reset_index()
        by_arm = summed.to_dict("records")  # native ints: Prefect's artifacts take JSON
        rows = {k: int(counts[k].sum()) for k in rows}
    outcome = GroundTruthOutcome([d.isoformat() for d in days], used, rejected, rows, by_arm, uri)
    publish(outcome)
    return outcome


def publish(outcome: GroundTruthOutcome) -> None:
    """What joined, where Prefect users look: a summary, and the counts per arm and version."""
    create_markdown_artifact(
        summary_markdown(outcome), key="ground-truth", description="Labels joined to the log"
    )
    if outcome.by_arm:
        create_table_artifact(
            outcome.by_arm, key="ground-truth-by-arm", description="Logged rows by label status"
        )


def summary_markdown(outcome: GroundTruthOutcome) -> str:
    if not outcome.days:
        return "## Ground truth\n\nThe prediction log holds no day in this range: nothing to label."
    rows = outcome.rows
    lines = [
        f"## Ground truth: {outcome.joined_rows} of {rows['logged']} logged rows labelled",
        "",
        f"Log days {outcome.days[0]} to {outcome.days[-1]} ({len(outcome.days)}), labels from"
        f" {len(outcome.periods)} validated batch(es): {', '.join(outcome.periods) or 'none'}.",
        "",
        *[f"- {status}: {rows[status]}" for status in LABEL_STATUSES],
        *[f"- left out: {why}" for why in outcome.rejected],
        "",
        f"Written to `{outcome.labelled_log_uri}`.",
    ]
    return "\n".join(lines)


@flow(name="ground-truth", task_runner=ThreadPoolTaskRunner(max_workers=2))
def ground_truth(request: GroundTruthRequest = GroundTruthRequest()) -> GroundTruthOutcome:  # noqa: B008
    config = load_config(request.config_path)
    outcome = label_served_traffic(config, Stores.from_config(config), request.first_day, request.last_day)
    get_run_logger().info(
        "%d of %d logged rows labelled over %d day(s)",
        outcome.joined_rows,
        outcome.rows.get("logged", 0),
        len(outcome.days),
    )
    return outcome
