"""Fault 1: the training flow's process is SIGKILLed at each task boundary, then run again.

One chain of runs on the same request: each run is killed a step further on (all ingests
done, a batch validated, the training frame built, one candidate fitted, every candidate
fitted, the model version created in MLflow), the next run resumes, and a last run
completes. After every kill the invariants hold, and the steps a killed run finished come
back from Prefect's cache (task state `Cached`) instead of being recomputed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlops.config import ProjectConfig, load_config, save_config
from mlops.names import CHALLENGER
from mlops.storage import Store, open_store
from mlops.tracking import REGISTRATION_TAG, Tracker
from tests.reliability.flow_runner import FlowProcess, quick_training

from .invariants import audit_landing, registry_problems

pytestmark = pytest.mark.integration

FAULT = "SIGKILL of the training flow at each task boundary"
PERIODS = ("2013-01", "2013-04")
RUN_TIMEOUT = 300.0  # one run's upper bound: a hang fails the test instead of blocking CI
FINISHED = {"Completed", "Cached"}

States = dict[str, str]


def _done(states: States, prefix: str) -> list[str]:
    return [name for name, state in states.items() if name.startswith(prefix) and state in FINISHED]


@dataclass(frozen=True)
class Boundary:
    name: str
    reached: Callable[[States], bool]


def _boundaries(config: ProjectConfig) -> list[Boundary]:
    tables = len(config.data.tables) - 1 + 4  # dimension tables + the four months
    candidates = len(config.training.candidates)
    return [
        Boundary("every landing file ingested", lambda s: len(_done(s, "ingest ")) == tables),
        Boundary("one batch validated", lambda s: len(_done(s, "validate flights/")) >= 1),
        Boundary("training frame built", lambda s: bool(_done(s, "build training frame"))),
        Boundary("one candidate fitted", lambda s: len(_done(s, "train ")) >= 1),
        Boundary("every candidate fitted", lambda s: len(_done(s, "train ")) == candidates),
    ]


@pytest.fixture(scope="module")
def crash_config(stack, stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's servers and landing zone; its own model, snapshots and quarantine."""
    folder = tmp_path_factory.mktemp("crash")
    data = stack_config.data.model_copy(
        update={"snapshot_uri": str(folder / "snapshots"), "quarantine_uri": str(folder / "quarantine")}
    )
    config = quick_training(stack_config.model_copy(update={"data": data}), "reliability-crash-resume")
    return save_config(config, folder / "mlops.yaml")


@pytest.fixture
def warm_children(crash_config: Path, tmp_path: Path) -> Iterator[Callable[[], FlowProcess]]:
    """Spawn children ahead of need (each imports for 10-30 s): `next_child()` returns a
    warm one and spawns its successor, so the next rerun can start the moment it is needed."""
    spawned: list[FlowProcess] = [FlowProcess(crash_config, tmp_path / "runs")]

    def next_child() -> FlowProcess:
        child = spawned[-1]
        spawned.append(FlowProcess(crash_config, tmp_path / "runs"))
        return child

    yield next_child
    for child in spawned:
        if child.alive():
            child.kill()


def _stores(config: ProjectConfig) -> tuple[Store, Store, Store]:
    data = config.data
    return tuple(
        open_store(config.store_uri(uri), data.s3)
        for uri in (data.landing_uri, data.snapshot_uri, data.quarantine_uri)
    )  # type: ignore[return-value]


def _invariant_problems(config: ProjectConfig, tracker: Tracker, landed: list[str]) -> tuple[list[str], int]:
    """What is wrong after a kill or a run: landing files lost, duplicate or partial
    registrations, a champion without a passing decision. Returns (problems, rows lost)."""
    audit = audit_landing(*_stores(config), keys=landed)
    problems = [*audit.problems, *registry_problems(tracker, config.registry.model_name)]
    for version in tracker.client.search_model_versions(f"name = '{config.registry.model_name}'"):
        missing = {"training_fingerprint", "validation", "snapshots"} - set(version.tags)
        if missing:  # a version the next run cannot recognise as this data's: a half registration
            problems.append(f"v{version.version} lacks the tags {sorted(missing)}: registration half done")
    return problems, audit.rows_lost


def _kill_when_registered(child: FlowProcess, client: MlflowClient, model_name: str) -> None:
    """SIGKILL the moment the model version exists, while the flow is still registering it."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        if client.search_model_versions(f"name = '{model_name}'"):
            child.kill()
            return
        if not child.alive():
            raise AssertionError(f"the run ended before registering; log:\n{child.log_tail()}")
        time.sleep(0.02)
    raise AssertionError("no model version appeared")


def test_sigkill_at_each_task_boundary_then_rerun_resumes_from_cache(
    crash_config: Path,
    sampled_landing: Store,
    warm_children: Callable[[], FlowProcess],
    fault_report,
) -> None:
    config = load_config(crash_config)
    tracker = Tracker(config.stack.tracking_uri, config.registry.experiment)
    landed = [config.data.tables["flights"].key(p) for p in ("2013-01", "2013-02", "2013-03", "2013-04")]
    landed += [spec.key() for table, spec in config.data.tables.items() if table != config.data.batch_table]
    request = {"start": PERIODS[0], "end": PERIODS[1]}

    tally = Tally()
    try:
        _kill_and_resume(config, tracker, landed, request, warm_children, tally)
    finally:
        fault_report.record(FAULT, runs=tally.runs, violations=tally.violations, rows_lost=tally.rows_lost)


@dataclass
class Tally:
    runs: int = 0
    violations: int = 0
    rows_lost: int = 0

    def check(self, problems: list[str], rows_lost: int, when: str) -> None:
        self.violations += len(problems)
        self.rows_lost += rows_lost
        assert not problems, f"{when}:\n" + "\n".join(problems)


def _kill_and_resume(
    config: ProjectConfig,
    tracker: Tracker,
    landed: list[str],
    request: dict[str, str],
    warm_children: Callable[[], FlowProcess],
    tally: Tally,
) -> None:
    name = config.registry.model_name
    finished_before: set[str] = set()  # cacheable tasks some killed run had finished
    for boundary in _boundaries(config):
        child = warm_children().start("training", **request)
        child.wait_for_tasks(boundary.reached, RUN_TIMEOUT)
        child.kill()
        tally.runs += 1
        states = child.task_states()  # what the server knew when the process died
        # A step a killed run finished is not computed again by the next ones.
        for task in finished_before & set(states):
            assert states[task] == "Cached", f"after a kill at {boundary.name!r}: {task} {states[task]}"
        finished_before |= {
            t for t, s in states.items() if s in FINISHED and t.startswith(("build ", "train "))
        }
        problems, lost = _invariant_problems(config, tracker, landed)
        if tracker.client.search_model_versions(f"name = '{name}'"):
            problems.append(f"a version was registered before the kill at {boundary.name!r}")
        tally.check(problems, lost, f"after a kill at {boundary.name!r}")

    # Killed while the version is being registered (between the version and its alias/tags).
    child = warm_children().start("training", **request)
    _kill_when_registered(child, tracker.client, name)
    tally.runs += 1
    tally.check(*_invariant_problems(config, tracker, landed), "after a kill during registration")

    # The last rerun completes, fits nothing and registers nothing new.
    final = warm_children().start("training", **request)
    [result] = final.wait(RUN_TIMEOUT)
    tally.runs += 1
    assert result.state == "COMPLETED", f"{result.message}\n{final.log_tail()}"
    states = final.task_states()
    trained = {t: s for t, s in states.items() if t.startswith(("build ", "train "))}
    assert set(trained.values()) == {"Cached"}, trained
    assert set(trained) >= finished_before
    problems, lost = _invariant_problems(config, tracker, landed)
    versions = tracker.client.search_model_versions(f"name = '{name}'")
    if len(versions) != 1:
        problems.append(
            f"{len(versions)} versions registered for one request: {[v.version for v in versions]}"
        )
    assert result.outcome is not None
    if versions and versions[0].tags.get(REGISTRATION_TAG) != "complete":
        problems.append(
            f"v{versions[0].version} was left with {REGISTRATION_TAG}={versions[0].tags.get(REGISTRATION_TAG)}"
        )
    if (challenger := tracker.aliases(name).get(CHALLENGER)) != result.outcome["model_version"]:
        problems.append(
            f"`challenger` is {challenger}, not the registered v{result.outcome['model_version']}"
        )
    tally.check(problems, lost, "after the final rerun")
