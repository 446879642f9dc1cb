"""Shared fixtures: real servers started once per test session and stopped at the end.

Nothing here is skipped when a server is missing: the fixtures start what they need
(a moto S3 server, the Prefect + MLflow stack) on free ports, under a session temp dir.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from app.stack import StackInfo, start_stack, stop_stack
from mlops.config import ProjectConfig, load_config
from mlops.storage import Store, open_store
from tests.ports import PortHolder, free_port, port_settings, with_free_ports

REPO_ROOT = Path(__file__).resolve().parents[1]
# Six months, like the demo: with fewer, trees cannot learn the seasonal pattern that
# lets them beat the logistic baseline (measured: 0.75 vs 0.69 ROC-AUC at this sample).
SAMPLED_PERIODS = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05", "2013-06"]
SAMPLE_FRACTION = 0.08


def wait_final(flow_run_id: Any, timeout: float) -> Any:
    """The flow run once it is in a final state (read through the Prefect API); fails the test
    naming the run and its state when that takes longer than `timeout` seconds."""
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            if time.monotonic() > deadline:
                pytest.fail(f"flow run {run.name} still {run.state_name} after {timeout:.0f} s")
            time.sleep(1)


def find_events(name: str, since: Any, timeout: float = 30, **filters: Any) -> list[dict]:
    """Prefect events of this name since `since` matching the filters (e.g. `resource=`,
    `any_resource=`), read through the API; waits up to `timeout` s for the client's
    background sender to deliver them."""
    from datetime import UTC, datetime, timedelta

    from prefect.client.orchestration import get_client

    query = {
        "filter": {
            "event": {"name": [name]},
            "occurred": {
                "since": since.isoformat(),
                "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
            **filters,
        },
        "limit": 50,
    }
    deadline = time.monotonic() + timeout
    while True:
        with get_client(sync_client=True) as client:
            found = client.request("POST", "/events/filter", json=query).json()["events"]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


@pytest.fixture(scope="session", autouse=True)
def default_ports_taken() -> Iterator[list[int]]:
    """Every default port of the stack (each port setting of the repo's mlops.yaml) held for
    the whole session where it is free, as a user's running stack would hold it: a test that
    starts a service on a default port fails here as it would for that user. Yields the ports
    this session holds (the others are held already by someone else)."""
    defaults = sorted({port for _, port in port_settings(load_config(REPO_ROOT / "mlops.yaml"))})
    holder = PortHolder(defaults)
    try:
        yield holder.held
    finally:
        holder.close()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[str]:
    """A moto S3 server over real HTTP on loopback; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    # boto3 refuses to sign without credentials; moto accepts any. Shared config files
    # are hidden so a developer's real profile can never be used against the fake.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "testing")
        env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        env.setenv("AWS_CONFIG_FILE", "/dev/null")
        env.setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.stop()


@pytest.fixture(scope="session")
def stack_config(tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    """The repo's mlops.yaml, with its state, landing zone and every port private to this session."""
    base = load_config(REPO_ROOT / "mlops.yaml")
    tmp = tmp_path_factory.mktemp("mlops")
    stack = base.stack.model_copy(
        update={
            "state_dir": str(tmp / "state"),
            "host": "127.0.0.1",
            "prefect_api_url": None,  # always the session's own servers
            "mlflow_tracking_uri": None,
            # Started by the tests that need them (test_deployments), not for every session.
            "evidently_ui": False,
            "serve_deployments": False,
            "serve_predictions": False,
        }
    )
    data = base.data.model_copy(
        update={
            "landing_uri": str(tmp / "landing"),
            "snapshot_uri": str(tmp / "snapshots"),
            "quarantine_uri": str(tmp / "quarantine"),
        }
    )
    serving = base.serving.model_copy(update={"prediction_log_uri": str(tmp / "predictions")})
    return with_free_ports(base.model_copy(update={"stack": stack, "data": data, "serving": serving}))


@contextmanager
def running_stack(config: ProjectConfig, **start: Any) -> Iterator[StackInfo]:
    """The stack of `config` (`start_stack(config, **start)`), stopped on the way out."""
    info = start_stack(config, **start)
    try:
        yield info
    finally:
        # Send the flows' buffered logs while the server still listens, not after.
        from prefect.logging.handlers import APILogWorker

        try:
            APILogWorker.drain_all(timeout=10)
        finally:
            stop_stack(config)  # even if draining fails: never leak servers


@pytest.fixture(scope="session")
def stack(stack_config: ProjectConfig) -> Iterator[StackInfo]:
    """A Prefect server and an MLflow server for the whole session, stopped at the end."""
    with running_stack(stack_config) as info:
        yield info


@pytest.fixture(scope="session")
def sampled_landing(stack_config: ProjectConfig) -> Store:
    """The session's landing store, seeded with ~8% of 2013-01..2013-06 plus weather and planes."""
    from app.seed import seed_landing

    store = open_store(stack_config.store_uri(stack_config.data.landing_uri), stack_config.data.s3)
    seed_landing(stack_config, store, SAMPLED_PERIODS, sample_fraction=SAMPLE_FRACTION, seed=0)
    return store
