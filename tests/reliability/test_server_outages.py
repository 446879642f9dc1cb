"""Faults 2 and 5: the MLflow server or the Prefect server goes away in the middle of a
training run, on a private stack (other tests keep the session's servers).

MLflow: stopped for ~30 s right after the batches are ingested, when the flow is about to
log them; MLflow's client retries with exponential backoff (MLFLOW_HTTP_REQUEST_MAX_RETRIES=7,
BACKOFF_FACTOR=2: about four minutes in all), so the run waits and completes. Prefect:
restarted while tasks run; its client retries a lost connection (PREFECT_CLIENT_MAX_RETRIES,
doubling waits), so the run either carries on to Completed or ends clearly Crashed, never
stuck in Running, and a rerun completes. After each, the invariants hold.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.stack import start_stack, stop_stack
from mlops.config import ProjectConfig, load_config, save_config
from mlops.names import CHALLENGER
from mlops.periods import Periods
from mlops.storage import Store, open_store
from mlops.tracking import REGISTRATION_TAG, Tracker
from tests.conftest import REPO_ROOT
from tests.reliability.flow_runner import FlowProcess, FlowResult, private_config, quick_training

from .invariants import audit_landing, registry_problems

pytestmark = [pytest.mark.integration, pytest.mark.long]

OUTAGE_SECONDS = 30.0
PREFECT_DOWN_SECONDS = 5.0
REQUEST = {"start": "2013-01", "end": "2013-04"}
RESTART_REQUEST = {"start": "2013-02", "end": "2013-05"}  # other data: fitted afresh, not from cache
RUN_TIMEOUT = 600.0
READY_TIMEOUT = 180.0
STACK_TIMEOUT = 300.0  # a server's start on a busy 2-core machine took over the default 90 s
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="module")
def private_stack(
    stack_config: ProjectConfig, sampled_landing: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A Prefect and an MLflow server of this module's own (stopped and restarted here),
    reading the session's sampled landing zone; yields the config file."""
    folder = tmp_path_factory.mktemp("outages")
    base = load_config(REPO_ROOT / "mlops.yaml")
    base = base.model_copy(
        update={"data": base.data.model_copy(update={"landing_uri": stack_config.data.landing_uri})}
    )
    config = quick_training(private_config(base, folder), "reliability-outages")
    path = save_config(config, folder / "mlops.yaml")
    start_stack(config, timeout=STACK_TIMEOUT)
    try:
        yield path
    finally:
        stop_stack(config)


def _warm_child(config_path: Path, folder: Path) -> FlowProcess:
    return FlowProcess(config_path, folder).wait_ready(READY_TIMEOUT)


def _all_ingested(config: ProjectConfig) -> int:
    return len(config.data.tables) - 1 + 4  # the dimension tables and the four months of REQUEST


def _invariant_problems(config: ProjectConfig, request: dict[str, str]) -> tuple[list[str], int]:
    """Invariants 1-3 for the landing files `request` ingested and for this module's model."""
    data = config.data
    stores = [
        open_store(config.store_uri(u), data.s3)
        for u in (data.landing_uri, data.snapshot_uri, data.quarantine_uri)
    ]
    keys = [data.tables["flights"].key(p) for p in Periods("month").range(request["start"], request["end"])]
    keys += [spec.key() for table, spec in data.tables.items() if table != data.batch_table]
    audit = audit_landing(*stores, keys=keys)
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    problems = [*audit.problems, *registry_problems(tracker, config.registry.model_name)]
    for version in tracker.client.search_model_versions(f"name = '{config.registry.model_name}'"):
        if (
            version.tags.get(REGISTRATION_TAG, "complete") != "complete"
            or "training_fingerprint" not in version.tags
        ):
            problems.append(f"v{version.version} is a partial registration: {dict(version.tags)}")
    return problems, audit.rows_lost


def _registered_once(config: ProjectConfig, result: FlowResult) -> list[str]:
    """The completed run's version is the one version of its fingerprint, and the challenger."""
    assert result.outcome is not None
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    version = tracker.client.get_model_version(config.registry.model_name, result.outcome["model_version"])
    same = tracker.client.search_model_versions(
        f"name = '{config.registry.model_name}' and "
        f"tags.training_fingerprint = '{version.tags['training_fingerprint']}'"
    )
    problems = [] if len(same) == 1 else [f"{len(same)} versions for one fingerprint"]
    if tracker.aliases(config.registry.model_name).get(CHALLENGER) != version.version:
        problems.append(f"`challenger` does not point at the registered v{version.version}")
    return problems


def test_mlflow_down_for_30_seconds_mid_run_the_run_waits_and_completes(
    private_stack: Path, tmp_path: Path, fault_report
) -> None:
    config = load_config(private_stack)
    child = _warm_child(private_stack, tmp_path / "runs").start("training", **REQUEST)
    child.wait_for_tasks(
        lambda s: (
            sum(n.startswith("ingest ") and v == "Completed" for n, v in s.items()) == _all_ingested(config)
        ),
        RUN_TIMEOUT,
    )
    stop_stack(config, only={"mlflow"})
    try:
        time.sleep(OUTAGE_SECONDS)
        # The flow cannot get past recording its validation without MLflow: it is waiting.
        states = child.task_states()
        assert child.alive() and "build training frame" not in states, states
    finally:
        # Brings back whatever is down (MLflow), on the same port and store.
        start_stack(config, timeout=STACK_TIMEOUT)
    [result] = child.wait(RUN_TIMEOUT)

    problems, lost = _invariant_problems(config, REQUEST)
    if result.state != "COMPLETED":
        problems.append(
            f"the run did not survive the outage: {result.state} {result.message}\n{child.log_tail()}"
        )
    else:
        problems += _registered_once(config, result)
    fault_report.record(f"MLflow server down {OUTAGE_SECONDS:.0f} s mid-run", 1, len(problems), lost)
    assert not problems, "\n".join(problems)


def test_prefect_restarted_mid_run_the_run_recovers_or_is_crashed_and_a_rerun_completes(
    private_stack: Path, tmp_path: Path, fault_report
) -> None:
    config = load_config(private_stack)
    child = _warm_child(private_stack, tmp_path / "runs").start("training", **RESTART_REQUEST)
    rerun = FlowProcess(private_stack, tmp_path / "runs")  # warms up meanwhile
    try:
        child.wait_for_tasks(lambda s: any(n.startswith("validate ") for n in s), RUN_TIMEOUT)
        stop_stack(config, only={"prefect"})
        time.sleep(PREFECT_DOWN_SECONDS)
        start_stack(config, timeout=STACK_TIMEOUT)
        results = child.wait(RUN_TIMEOUT, allow_no_result=True)  # a crash may leave no result
        runs = 1
        [run] = child.flow_runs()  # what the server recorded, after its restart
        problems: list[str] = []
        # Recovered (Completed) or clearly ended; a run left "Running" would be a lie in the UI.
        if run.state is None or run.state.type.value not in TERMINAL:
            problems.append(
                f"after the restart the server shows the run as {run.state and run.state.type.value}"
                f" (the process exited {child.proc.returncode}):\n{child.log_tail()}"
            )
        result = results[0] if results else FlowResult("NO_RESULT", child.log_tail(), None, str(run.id))
        if result.state != "COMPLETED":
            [again] = rerun.start("training", **RESTART_REQUEST).wait(RUN_TIMEOUT)
            runs += 1
            if again.state != "COMPLETED":
                problems.append(f"the rerun after the restart ended {again.state}: {again.message}")
            result = again
        if result.state == "COMPLETED":
            problems += _registered_once(config, result)
        more, lost = _invariant_problems(config, RESTART_REQUEST)
        problems += more
        fault_report.record("Prefect server restarted mid-run", runs, len(problems), lost)
        assert not problems, "\n".join(problems)
    finally:
        if rerun.alive():
            rerun.kill()
