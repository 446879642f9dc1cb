"""The local stack: both servers answer, are reused when already up, and serve clients."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import pytest

from app.stack import StackInfo, require_servers, stack_status, start_stack, stop_stack
from mlops.clients import client_settings
from mlops.config import ProjectConfig
from mlops.errors import ServiceUnavailableError
from tests.ports import free_ports, with_free_ports

pytestmark = pytest.mark.integration


def test_health_endpoints_answer(stack: StackInfo, stack_config: ProjectConfig) -> None:
    assert stack.prefect_api_url == stack_config.stack.api_url
    prefect = httpx.get(f"{stack.prefect_api_url}/health", timeout=5)
    mlflow = httpx.get(f"{stack.mlflow_url}/health", timeout=5)
    assert prefect.status_code == 200 and prefect.json() is True
    assert mlflow.status_code == 200
    assert httpx.get(stack.prefect_ui_url, timeout=5).status_code == 200  # the UI is served


def test_status_reports_healthy(stack: StackInfo, stack_config: ProjectConfig) -> None:
    statuses = {s.name: s for s in stack_status(stack_config)}
    assert set(statuses) == {"prefect", "mlflow"}
    assert statuses["prefect"].pid == stack.prefect_pid
    assert statuses["mlflow"].pid == stack.mlflow_pid
    for status in statuses.values():
        assert status.running and status.healthy and status.managed
        assert status.log is not None and status.log.is_file()
    pid_files = sorted(p.name for p in (stack_config.state_dir / "run").iterdir())
    assert pid_files == ["mlflow.pid", "prefect.pid"]


def test_start_again_is_a_noop(stack: StackInfo, stack_config: ProjectConfig) -> None:
    t0 = time.monotonic()
    again = start_stack(stack_config)
    assert time.monotonic() - t0 < 5
    assert again.started == []
    assert (again.prefect_pid, again.mlflow_pid) == (stack.prefect_pid, stack.mlflow_pid)


def test_require_servers_passes_when_up(stack: StackInfo, stack_config: ProjectConfig) -> None:
    require_servers(stack_config)


def test_require_servers_names_the_server_and_the_fix(stack_config: ProjectConfig) -> None:
    prefect_port, mlflow_port = free_ports(2)
    nowhere = stack_config.model_copy(
        update={
            "stack": stack_config.stack.model_copy(
                update={"prefect_port": prefect_port, "mlflow_port": mlflow_port}
            )
        }
    )
    with pytest.raises(ServiceUnavailableError, match=r"Prefect API at .* does not answer: run `mlops up`"):
        require_servers(nowhere)


def test_status_of_a_stack_never_started(stack_config: ProjectConfig, tmp_path: Path) -> None:
    for status in stack_status(private_config(stack_config, tmp_path)):
        assert not status.running and not status.healthy and status.pid is None


def test_client_settings_point_clients_at_the_stack(stack: StackInfo, stack_config: ProjectConfig) -> None:
    from prefect.settings import PREFECT_API_URL, PREFECT_RESULTS_PERSIST_BY_DEFAULT

    before_api = PREFECT_API_URL.value()
    before_uri = os.environ.get("MLFLOW_TRACKING_URI")
    with client_settings(stack_config):
        assert PREFECT_API_URL.value() == stack_config.stack.api_url
        assert PREFECT_RESULTS_PERSIST_BY_DEFAULT.value() is True
        assert os.environ["MLFLOW_TRACKING_URI"] == stack_config.stack.tracking_uri
    assert PREFECT_API_URL.value() == before_api
    assert os.environ.get("MLFLOW_TRACKING_URI") == before_uri


def test_a_flow_runs_against_the_prefect_server(stack: StackInfo, stack_config: ProjectConfig) -> None:
    from prefect import flow, get_client, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(name="stack-smoke")
    def smoke(x: int) -> int:
        return double(x)

    with client_settings(stack_config):
        state = smoke(21, return_state=True)
        assert state.is_completed() and state.result() == 42
        with get_client(sync_client=True) as client:
            run = client.read_flow_run(state.state_details.flow_run_id)
    assert run.state is not None and run.state.is_completed()


def test_mlflow_proxies_artifacts_into_the_state_dir(
    stack: StackInfo, stack_config: ProjectConfig, tmp_path: Path
) -> None:
    import mlflow

    note = tmp_path / "note.txt"
    note.write_text("hello")
    with client_settings(stack_config):
        client = mlflow.MlflowClient()
        experiment_id = client.create_experiment("stack-smoke")
        run = client.create_run(experiment_id)
        client.log_metric(run.info.run_id, "m", 1.0)
        client.log_artifact(run.info.run_id, str(note))
        client.set_terminated(run.info.run_id)
        assert client.get_run(run.info.run_id).data.metrics == {"m": 1.0}
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    stored = list((stack_config.state_dir / "mlflow" / "artifacts").rglob("note.txt"))
    assert len(stored) == 1 and stored[0].read_text() == "hello"


def private_config(stack_config: ProjectConfig, state_dir: Path) -> ProjectConfig:
    stack = stack_config.stack.model_copy(update={"state_dir": str(state_dir)})
    return with_free_ports(stack_config.model_copy(update={"stack": stack}))


def group_exists(pgid: int) -> bool:
    """Any process left in the server's group (the server, or a worker it spawned)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stop_leaves_no_process(stack_config: ProjectConfig, tmp_path: Path) -> None:
    config = private_config(stack_config, tmp_path / "state")
    info = start_stack(config)
    assert sorted(info.started) == ["mlflow", "prefect"]
    pids = [info.prefect_pid, info.mlflow_pid]
    assert sorted(stop_stack(config)) == ["mlflow", "prefect"]
    assert not any(group_exists(pid) for pid in pids if pid)
    assert list((tmp_path / "state" / "run").iterdir()) == []
    assert stop_stack(config) == []  # nothing left to stop


def test_a_server_that_dies_names_its_log(stack_config: ProjectConfig, tmp_path: Path) -> None:
    config = private_config(stack_config, tmp_path / "state")
    (tmp_path / "state" / "prefect" / "prefect.db").mkdir(parents=True)  # SQLite cannot open a folder
    with pytest.raises(ServiceUnavailableError, match=r"prefect server exited .*prefect\.log"):
        start_stack(config, timeout=60)
    # The MLflow server started alongside was stopped again.
    assert list((tmp_path / "state" / "run").iterdir()) == []
    assert not any(s.running for s in stack_status(config))
