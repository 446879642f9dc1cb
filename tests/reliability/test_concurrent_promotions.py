"""Fault 4: several training + promotion runs start at once, each on different months.

Three processes, each training on its own months and then promoting the version it
registered, all judged on June 2013. The promotion lock and the compare-and-set must
leave exactly one consistent champion: the promoted decisions form one chain (each
compared with the champion its predecessor installed), the champion is the last link,
every run's decision is on record in MLflow, and no registration is doubled.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlops.config import (
    ApprovalConfig,
    OperationalGateConfig,
    ProjectConfig,
    QualityGateConfig,
    SliceGateConfig,
    load_config,
    save_config,
)
from mlops.storage import Store, open_store
from mlops.tracking import Tracker
from tests.reliability.flow_runner import FlowProcess, FlowResult, quick_training

from .invariants import audit_landing, champion_problems, decision_record, duplicate_registrations

pytestmark = pytest.mark.integration

FAULT = "concurrent training + promotion runs (3, different months)"
EVAL_PERIOD = "2013-06"
REQUESTS = [("2013-01", "2013-03"), ("2013-01", "2013-04"), ("2013-02", "2013-05")]
READY_TIMEOUT = 180.0
RUN_TIMEOUT = 600.0  # three trainings and three promotions sharing two cores


@pytest.fixture(scope="module")
def race_config(stack, stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's servers and landing zone; its own model, snapshots and quarantine, and
    gates the 8% sample can meet (slices are small), loose operational limits so that no
    outcome depends on the machine's speed."""
    folder = tmp_path_factory.mktemp("race")
    data = stack_config.data.model_copy(
        update={"snapshot_uri": str(folder / "snapshots"), "quarantine_uri": str(folder / "quarantine")}
    )
    promotion = stack_config.promotion.model_copy(
        update={
            "quality": QualityGateConfig(min_roc_auc=0.6, max_brier=0.25),
            "slices": SliceGateConfig(columns=["origin"], max_roc_auc_drop=0.05, min_rows=200),
            "operational": OperationalGateConfig(
                max_p95_latency_ms=10_000, min_rows_per_second=10, latency_calls=20, batch_rows=500
            ),
            "approval": ApprovalConfig(required=False),
            "lock_timeout_seconds": RUN_TIMEOUT,
        }
    )
    base = stack_config.model_copy(update={"data": data, "promotion": promotion})
    return save_config(quick_training(base, "reliability-concurrent"), folder / "mlops.yaml")


@pytest.fixture
def contenders(race_config: Path, tmp_path: Path) -> Iterator[list[FlowProcess]]:
    children = [FlowProcess(race_config, tmp_path / "runs") for _ in REQUESTS]
    yield children
    for child in children:
        if child.alive():
            child.kill()


def _chain_problems(decisions: list[dict], aliases: dict[str, str]) -> list[str]:
    """The promoted decisions must form one chain from no champion to the current one: a lost
    alias update shows as a decision compared with a champion nobody installed, or as a
    champion that is not the last promoted version."""
    problems = []
    promoted = {d["compared_with"]: d for d in decisions if d["promoted"]}
    if len(promoted) != sum(d["promoted"] for d in decisions):
        problems.append("two promotions replaced the same champion (a lost update)")
    champion, previous, seen = None, None, 0
    while champion in promoted:
        previous, champion = champion, promoted[champion]["challenger_version"]
        seen += 1
    if seen != len(promoted):
        problems.append(f"the promoted decisions do not form one chain: {list(promoted.values())}")
    if aliases.get("champion") != champion:
        problems.append(f"champion is {aliases.get('champion')}, the last promoted version is {champion}")
    if previous is not None and aliases.get("previous") != previous:
        problems.append(f"previous is {aliases.get('previous')}, expected {previous}")
    installed = {None, *(d["challenger_version"] for d in decisions if d["promoted"])}
    for d in decisions:
        if d["compared_with"] not in installed:
            problems.append(
                f"v{d['challenger_version']} was compared with v{d['compared_with']}, never a champion"
            )
    return problems


def _champion_problems(tracker: Tracker, model_name: str) -> list[str]:
    """Invariant 3, plus the MLflow decision run of the champion saying promoted too."""
    champion = tracker.aliases(model_name).get("champion")
    if champion is None:
        return ["no champion"]
    tags = tracker.client.get_model_version(model_name, champion).tags
    problems = champion_problems({"champion": champion}, {champion: decision_record(tracker, tags)})
    run_id = tags.get("promotion.mlflow_run_id", "")
    decided = tracker.client.get_run(run_id).data.tags.get("promotion") if run_id else None
    if decided != "promoted":
        problems.append(f"champion v{champion}: its decision run {run_id or '(none)'} says {decided!r}")
    return problems


def _record_problems(tracker: Tracker, model_name: str, results: list[FlowResult]) -> list[str]:
    """Every promotion run left its decision in MLflow: a decision run and the version's tags."""
    problems = []
    runs = tracker.client.search_runs(
        [tracker.experiment_id], filter_string="tags.pipeline = 'promotion'", max_results=200
    )
    recorded = {r.data.tags.get("prefect_flow_run_id"): r.data.tags.get("promotion") for r in runs}
    for result in results:
        assert result.outcome is not None
        verdict = "promoted" if result.outcome["promoted"] else "rejected"
        if recorded.get(result.flow_run_id) != verdict:
            problems.append(
                f"flow run {result.flow_run_id}: decision run says {recorded.get(result.flow_run_id)}"
            )
        version = result.outcome["challenger_version"]
        tags = tracker.client.get_model_version(model_name, version).tags
        if tags.get("promotion") != verdict or not tags.get("promotion.mlflow_run_id"):
            problems.append(f"v{version}: version tags record {tags.get('promotion')!r}, not {verdict!r}")
    return problems


def test_concurrent_training_and_promotion_leave_one_consistent_champion(
    race_config: Path, sampled_landing: Store, contenders: list[FlowProcess], fault_report
) -> None:
    config = load_config(race_config)
    name = config.registry.model_name
    for child in contenders:
        child.wait_ready(READY_TIMEOUT)
    for child, (start, end) in zip(contenders, REQUESTS, strict=True):
        child.start("training+promotion", start=start, end=end, eval_period=EVAL_PERIOD)
    results = [child.wait(RUN_TIMEOUT) for child in contenders]

    runs = sum(len(r) for r in results)
    problems: list[str] = []
    trainings = [r[0] for r in results]
    promotions = [r[1] for r in results if len(r) > 1]
    for child, result in zip(contenders, results, strict=True):
        for flow_result in result:
            if flow_result.state != "COMPLETED":
                problems.append(f"{flow_result.state}: {flow_result.message}\n{child.log_tail()}")
    if len(promotions) != len(REQUESTS):
        problems.append(f"{len(REQUESTS) - len(promotions)} training runs did not reach their promotion")
    versions = {t.outcome["model_version"] for t in trainings if t.outcome}
    if len(versions) != len(REQUESTS):
        problems.append(f"three different requests registered versions {sorted(versions)}")

    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    decisions = [p.outcome for p in promotions if p.outcome]
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    problems += [
        f"fingerprint {fp[:12]} registered as {vs}" for fp, vs in duplicate_registrations(versions).items()
    ]
    problems += _champion_problems(tracker, name)
    problems += _chain_problems(decisions, tracker.aliases(name))
    problems += _record_problems(tracker, name, [p for p in promotions if p.outcome])
    if not any(d["promoted"] for d in decisions):
        problems.append("no run was promoted, though the first to decide faced no champion")
    data = config.data
    audit = audit_landing(
        *(
            open_store(config.store_uri(u), data.s3)
            for u in (data.landing_uri, data.snapshot_uri, data.quarantine_uri)
        ),
        keys=[data.tables["flights"].key(f"2013-0{m}") for m in range(1, 7)]
        + [spec.key() for table, spec in data.tables.items() if table != data.batch_table],
    )
    problems += audit.problems
    fault_report.record(FAULT, runs=runs, violations=len(problems), rows_lost=audit.rows_lost)
    assert not problems, "\n".join(problems)
