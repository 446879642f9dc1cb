"""The production topology, running here: `mlops up --profile production` on PostgreSQL, S3 (a
moto server) and MLflow's basic-auth app; training and promotion started through the Prefect
API as the UI starts them and run by the served deployments; the prediction service answering
from the champion the promotion chose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from app.stack import DEPLOYMENTS, MLFLOW, PREFECT, StackInfo, stack_status
from mlops.clients import client_settings
from mlops.config import ProjectConfig
from mlops.storage import Store
from serving.samples import sample_records
from tests.conftest import wait_final
from tests.e2e.conftest import ARTIFACT_BUCKET, Postgres

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 900  # a hang guard for one flow run (pick-up, then training or the gates) on a busy machine
TRAIN = {"start": "2013-01", "end": "2013-06"}
EVAL_PERIOD = "2013-07"


@dataclass(frozen=True)
class Runs:
    training: FlowRun
    promotion: FlowRun


def _wait_final(flow_run_id: Any) -> FlowRun:
    return wait_final(flow_run_id, WAIT_SECONDS)


def _run_like_the_ui(config: ProjectConfig, flow: str, request: dict[str, Any]) -> FlowRun:
    """Create a run of the served deployment (timeout=0: nothing in this process runs it)."""
    started = run_deployment(f"{flow}/{config.project}", parameters={"request": request}, timeout=0)
    return _wait_final(started.id)


@pytest.fixture(scope="module")
def runs(
    production_stack: StackInfo,
    s3_landing: Store,
    production_config: ProjectConfig,
    production_config_file: Path,
) -> Runs:
    config_path = str(production_config_file)
    with client_settings(production_config):
        training = _run_like_the_ui(
            production_config, "training-pipeline", {**TRAIN, "config_path": config_path}
        )
        assert training.state is not None and training.state.is_completed(), training.state
        promotion = _run_like_the_ui(
            production_config, "promotion", {"config_path": config_path, "eval_period": EVAL_PERIOD}
        )
    return Runs(training, promotion)


@pytest.fixture(scope="module")
def registry(production_stack: StackInfo, production_config: ProjectConfig) -> MlflowClient:
    """Authenticated by MLFLOW_TRACKING_USERNAME/PASSWORD, as any client of the stack."""
    return MlflowClient(production_config.stack.tracking_uri)


def test_up_runs_every_server_on_postgres_s3_and_auth(
    production_stack: StackInfo, production_config: ProjectConfig, postgres: Postgres
) -> None:
    statuses = {s.name: s for s in stack_status(production_config)}
    assert {PREFECT, MLFLOW, DEPLOYMENTS} <= set(statuses)
    assert all(statuses[name].running and statuses[name].healthy for name in (PREFECT, MLFLOW, DEPLOYMENTS))
    settings = production_config.stack.production
    assert settings is not None
    args = Path(f"/proc/{production_stack.mlflow_pid}/cmdline").read_bytes().split(b"\0")
    command = [part.decode() for part in args if part]
    assert command[command.index("--backend-store-uri") + 1].endswith(f"/{settings.mlflow_database}")
    assert command[command.index("--artifacts-destination") + 1] == f"s3://{ARTIFACT_BUCKET}"
    assert "--serve-artifacts" in command and command[command.index("--app-name") + 1] == "basic-auth"


def test_flow_runs_started_through_the_api_complete(runs: Runs, production_config: ProjectConfig) -> None:
    for run in (runs.training, runs.promotion):
        assert run.state is not None and run.state.is_completed(), (run.name, run.state)
    with client_settings(production_config):
        decision = runs.promotion.state.result()
    assert decision.promoted, decision.reasons  # no champion yet: the gates judge alone


def test_state_lives_in_postgresql(runs: Runs, production_config: ProjectConfig, postgres: Postgres) -> None:
    import psycopg2

    settings = production_config.stack.production
    assert settings is not None

    def count(database: str, query: str, *args: Any) -> int:
        connection = psycopg2.connect(
            dbname=database, user=postgres.user, host=postgres.host, port=postgres.port
        )
        try:
            with connection.cursor() as cursor:
                cursor.execute(query, args)
                return cursor.fetchone()[0]
        finally:
            connection.close()

    completed = count(
        settings.prefect_database,
        "SELECT count(*) FROM flow_run WHERE id IN (%s, %s) AND state_type = 'COMPLETED'",
        str(runs.training.id),
        str(runs.promotion.id),
    )
    assert completed == 2
    model = production_config.registry.model_name
    assert count(settings.mlflow_database, "SELECT count(*) FROM model_versions WHERE name = %s", model) == 1
    assert count(settings.mlflow_database, "SELECT count(*) FROM users WHERE username = 'admin'") == 1


def test_model_artifacts_are_in_the_s3_bucket(runs: Runs, moto_s3: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1")
    keys = [
        item["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=ARTIFACT_BUCKET)
        for item in page.get("Contents", [])
    ]
    assert any(key.endswith("/MLmodel") for key in keys), keys[:20]
    assert any(key.endswith(".skops") for key in keys), keys[:20]


def test_registry_state_needs_credentials(
    runs: Runs, registry: MlflowClient, production_config: ProjectConfig, credentials: dict[str, str]
) -> None:
    model = production_config.registry.model_name
    trained = runs.training.state.result()
    champion = registry.get_model_version_by_alias(model, "champion")
    assert champion.version == trained.model_version
    assert champion.tags["periods"] == f"{TRAIN['start']}..{TRAIN['end']}"
    url = f"{production_config.stack.tracking_uri}/api/2.0/mlflow/registered-models/get"
    anonymous = httpx.get(url, params={"name": model}, timeout=10)
    wrong = httpx.get(
        url, params={"name": model}, auth=(credentials["username"], "not-the-password"), timeout=10
    )
    right = httpx.get(
        url, params={"name": model}, auth=(credentials["username"], credentials["password"]), timeout=10
    )
    assert (anonymous.status_code, wrong.status_code, right.status_code) == (401, 401, 200)


@pytest.fixture(scope="module")
def prediction_service(
    runs: Runs, production_config: ProjectConfig, production_config_file: Path
) -> Iterator[str]:
    """`mlops serve` in a process of its own, authenticated by the environment."""
    port = production_config.serving.port
    command = [sys.executable, "-m", "app.cli", "--config", str(production_config_file), "serve"]
    command += ["--port", str(port)]
    service = subprocess.Popen(
        command, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert service.poll() is None, service.stdout.read().decode(errors="replace")[-3000:]
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the prediction service was not ready within 120 s"
            time.sleep(0.5)
        yield url
    finally:
        service.terminate()
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait()


def test_the_service_answers_from_the_champion(
    prediction_service: str, registry: MlflowClient, production_config: ProjectConfig, s3_landing: Store
) -> None:
    champion = registry.get_model_version_by_alias(production_config.registry.model_name, "champion")
    records = sample_records(production_config, s3_landing, EVAL_PERIOD, rows=5, seed=0)
    answer = httpx.post(f"{prediction_service}/predict", json={"records": records}, timeout=30)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == 5
    assert {p["model_version"] for p in predictions} == {champion.version}
    assert all(0 <= p["probability"] <= 1 for p in predictions)
