"""Run a flow in a child process that a test can SIGKILL, and watch its runs through the
Prefect API.

Importing Prefect, MLflow and scikit-learn takes a child 8 s of CPU (20-30 s on a busy
machine), so a child is spawned "warm": it imports, then waits for its request on stdin.
A test spawns the next child while the current one runs, and a rerun starts at once.

The child (`python -m tests.reliability.flow_runner CONFIG TAG RESULT_FILE`) points its
clients at the config's servers (`client_settings`), tags its flow runs so the parent can
find them, runs the flow(s) with `return_state=True` and writes what happened to RESULT_FILE
as JSON: per flow, the final state's type and message and the outcome.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path
from typing import Any

from mlops.config import ProjectConfig, load_config

REPO_ROOT = Path(__file__).resolve().parents[2]
KINDS = ("training", "promotion", "training+promotion")


@dataclass(frozen=True)
class FlowResult:
    """What one flow ended as: `state` is its final Prefect state type (COMPLETED, FAILED, ...)."""

    state: str
    message: str
    outcome: dict[str, Any] | None
    flow_run_id: str | None


class FlowProcess:
    """A child process that runs one request (one flow, or training then promotion of the
    version it registered), in its own process group, its flow runs tagged `self.tag`."""

    def __init__(self, config_path: Path, folder: Path) -> None:
        self.config_path = config_path
        self.config = load_config(config_path)
        self.tag = f"reliability-{uuid.uuid4().hex[:10]}"
        self.kind = "(not started)"
        folder.mkdir(parents=True, exist_ok=True)
        self.result_file = folder / f"{self.tag}.json"
        self.ready_file = folder / f"{self.tag}.ready"
        self.log_file = folder / f"{self.tag}.log"
        with self.log_file.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.reliability.flow_runner",
                    str(config_path),
                    self.tag,
                    str(self.result_file),
                ],
                cwd=REPO_ROOT,
                env=_child_env(),
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: a kill takes the whole flow with it
            )

    def wait_ready(self, timeout: float) -> FlowProcess:
        """Wait until the child has imported everything and waits for its request."""
        deadline = time.monotonic() + timeout
        while not self.ready_file.exists():
            if not self.alive() or time.monotonic() > deadline:
                raise AssertionError(f"the child did not get ready; log:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def start(self, kind: str, **request: Any) -> FlowProcess:
        """Hand the warm child its request; it starts as soon as its imports are done."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
        self.kind = kind
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"kind": kind, "request": request}) + "\n").encode())
        self.proc.stdin.close()
        return self

    # -- the process ------------------------------------------------------------------
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL, as an OOM killer or a lost node would: no handler runs, nothing is flushed."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float, allow_no_result: bool = False) -> list[FlowResult]:
        """Wait for the child to exit and read what it wrote (one result per flow it ran);
        kills it if it runs over `timeout`. A child that died writing nothing is an error,
        or an empty list with `allow_no_result`."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"{self.kind} ran over {timeout:.0f} s; log:\n{self.log_tail()}") from None
        if not self.result_file.exists():
            if allow_no_result:
                return []
            raise AssertionError(
                f"{self.kind} exited with code {self.proc.returncode} and no result; log:\n{self.log_tail()}"
            )
        return [FlowResult(**r) for r in json.loads(self.result_file.read_text())]

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- what Prefect knows about it ---------------------------------------------------
    def flow_runs(self) -> list[Any]:
        """This child's flow runs, oldest first."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
        from prefect.client.schemas.sorting import FlowRunSort

        from mlops.clients import client_settings

        with client_settings(self.config), get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[self.tag])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=10,
            )
        return list(runs)

    def task_states(self) -> dict[str, str]:
        """Task run name -> state name (Completed, Cached, Running, ...) of the first flow run."""
        runs = self.flow_runs()
        return task_states(self.config, runs[0].id) if runs else {}

    def wait_for_tasks(
        self, done: Callable[[dict[str, str]], bool], timeout: float, poll: float = 0.05
    ) -> dict[str, str]:
        """Poll the first flow run's task runs until `done(states)`; fails if the child exits first."""
        deadline = time.monotonic() + timeout
        run_id = None
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            if run_id is None and (runs := self.flow_runs()):
                run_id = runs[0].id
            states = task_states(self.config, run_id) if run_id is not None else {}
            if run_id is not None and done(states):
                return states
            if not self.alive():
                raise AssertionError(
                    f"{self.kind} exited before the awaited point ({states}); log:\n{self.log_tail()}"
                )
            time.sleep(poll)
        raise AssertionError(f"awaited point not reached within {timeout:.0f} s ({states})")


def task_states(config: ProjectConfig, flow_run_id: Any) -> dict[str, str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.client.schemas.sorting import TaskRunSort

    from mlops.clients import client_settings

    with client_settings(config), get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,  # the sync client sends sort=None otherwise: 422
            limit=200,
        )
    return {run.name: run.state.name if run.state else "Pending" for run in runs}


def _child_env() -> dict[str, str]:
    # The child's Prefect settings come from the config (client_settings), not the parent's shell.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- the child ----------------------------------------------------------------------------


def _result(state: Any) -> dict[str, Any]:
    try:
        value = state.result(raise_on_failure=False)
    except Exception:  # a crashed run may have no result to read
        value = None
    outcome = None
    if is_dataclass(value) and not isinstance(value, type):
        outcome = json.loads(json.dumps(asdict(value), default=str))
    run_id = state.state_details.flow_run_id
    return {
        "state": state.type.value,
        "message": state.message or "",
        "outcome": outcome,
        "flow_run_id": str(run_id) if run_id else None,
    }


def _run_child(config_path: str, tag: str, result_file: Path) -> int:
    from prefect import tags
    from prefect.logging.handlers import APILogWorker

    from flows.promotion import PromotionRequest, promotion
    from flows.training import TrainingRequest, training_pipeline
    from mlops.clients import client_settings

    result_file.with_suffix(".ready").touch()
    line = sys.stdin.readline()  # warm: imports done, wait for the request
    if not line:
        return 2  # the parent went away without a request
    order = json.loads(line)
    kind, request = order["kind"], {**order["request"], "config_path": config_path}
    results = []
    with client_settings(load_config(config_path)), tags(tag):
        if kind in ("training", "training+promotion"):
            training = {k: v for k, v in request.items() if k in TrainingRequest.model_fields}
            results.append(_result(training_pipeline(TrainingRequest(**training), return_state=True)))
        if kind == "promotion" or (kind == "training+promotion" and results[0]["outcome"]):
            fields = {k: v for k, v in request.items() if k in PromotionRequest.model_fields}
            if kind == "training+promotion":
                fields["challenger_version"] = results[0]["outcome"]["model_version"]
            results.append(_result(promotion(PromotionRequest(**fields), return_state=True)))
        APILogWorker.drain_all(timeout=10)
    tmp = result_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    tmp.rename(result_file)  # the parent never reads a half-written result
    return 0 if all(r["state"] == "COMPLETED" for r in results) else 1


def main(argv: list[str]) -> int:
    config_path, tag, result_file = argv
    return _run_child(config_path, tag, Path(result_file))


def private_config(base: ProjectConfig, folder: Path, **updates: Any) -> ProjectConfig:
    """`base` with state, snapshots, quarantine and every server port private to `folder`
    (the prediction service's too: the harness's stack starts it)."""
    from tests.ports import with_free_ports

    stack = base.stack.model_copy(
        update={
            "state_dir": str(folder / "state"),
            "host": "127.0.0.1",
            "prefect_api_url": None,
            "mlflow_tracking_uri": None,
            "evidently_ui": False,
            "serve_deployments": False,
        }
    )
    data = base.data.model_copy(
        update={"snapshot_uri": str(folder / "snapshots"), "quarantine_uri": str(folder / "quarantine")}
    )
    return with_free_ports(base.model_copy(update={"stack": stack, "data": data, **updates}))


def quick_training(base: ProjectConfig, model_name: str) -> ProjectConfig:
    """`base` with its own model name and three quick candidates (two of them baselines), so a
    run takes seconds on the 8% sample and a kill can land between candidates."""
    from mlops.config import CandidateConfig

    training = base.training.model_copy(
        update={
            "candidates": [
                CandidateConfig(
                    name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"}
                ),
                CandidateConfig(
                    name="hist_gb",
                    estimator="hist_gradient_boosting",
                    encoding="ordinal",
                    params={"max_iter": 100, "early_stopping": True, "n_iter_no_change": 10},
                ),
                CandidateConfig(
                    name="forest",
                    estimator="random_forest",
                    encoding="ordinal",
                    params={"n_estimators": 20, "max_samples": 0.3, "min_samples_leaf": 20, "n_jobs": 1},
                ),
            ],
            "importance_rows": 1000,
            "importance_repeats": 1,
        }
    )
    registry = base.registry.model_copy(update={"model_name": model_name, "experiment": model_name})
    return base.model_copy(update={"training": training, "registry": registry})


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
