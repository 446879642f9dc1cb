"""The deployments as `mlops up` serves them, against the session's real Prefect API: the
Evidently UI and the serving process join the running stack, the schedules and the drift
trigger are registered, a run started like the UI starts one matches the in-process run, and
a drift event starts the retraining deployment, which the served process runs to the end.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort
from prefect.deployments import run_deployment

from app.stack import DEPLOYMENTS, EVIDENTLY, SERVE, stack_status, start_stack, stop_stack
from flows.monitoring import MonitoringOutcome, MonitoringRequest, monitoring
from flows.retraining import RetrainingOutcome
from flows.training import TrainingOutcome, TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import ProjectConfig
from tasks.drift import DRIFT_RETRAIN
from tests.conftest import REPO_ROOT, wait_final
from tests.integration.drift_setup import (
    copy_landing,
    drift_config,
    landing,
    read_landed,
    write_config,
    write_landed,
)
from tests.ports import free_port

pytestmark = pytest.mark.integration

MODEL = "flight-delay-trigger-test"
BATCH = "2013-08"
WAIT_SECONDS = 420  # a triggered retraining: pick-up (<= 10 s poll), training, promotion


@pytest.fixture(scope="module")
def config(stack, stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    base = drift_config(
        stack_config,
        tmp_path_factory.mktemp("deployments"),
        MODEL,
        ["2013-05", "2013-06", "2013-07", BATCH],
        retrain_window=3,
        max_metric_drop=1.0,  # isolate data drift (see test_monitoring)
    )
    served = base.stack.model_copy(
        update={"evidently_ui": True, "serve_deployments": True, "serve_predictions": True}
    )
    # The service polls the registry each second here, so a new champion shows up quickly.
    serving = base.serving.model_copy(update={"port": free_port(), "poll_seconds": 1.0})
    return base.model_copy(update={"stack": served, "serving": serving})


@pytest.fixture(scope="module")
def config_file(config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(config, tmp_path_factory.mktemp("deployments-config"))


@pytest.fixture(scope="module")
def served(config: ProjectConfig, config_file: Path) -> Iterator[Any]:
    """`mlops up` on the session's running stack: starts only the two services it lacks."""
    info = start_stack(config, config_file=config_file)
    try:
        yield info
    finally:
        stop_stack(config, only={EVIDENTLY, DEPLOYMENTS, SERVE})


@pytest.fixture(scope="module")
def prefect_and_mlflow(stack, config: ProjectConfig) -> Iterator[None]:
    with client_settings(config):
        yield


@pytest.fixture(scope="module")
def champion(prefect_and_mlflow, config: ProjectConfig, config_file: Path) -> TrainingOutcome:
    trained = training_pipeline(TrainingRequest(start="2013-06", end="2013-07", config_path=str(config_file)))
    MlflowClient(config.stack.tracking_uri).set_registered_model_alias(
        MODEL, "champion", trained.model_version
    )
    return trained


def test_up_starts_the_evidently_ui_and_the_deployments(served, config: ProjectConfig) -> None:
    assert set(served.started) == {EVIDENTLY, DEPLOYMENTS, SERVE}  # Prefect and MLflow were already up
    statuses = {s.name: s for s in stack_status(config)}
    assert set(statuses) == {"prefect", "mlflow", EVIDENTLY, DEPLOYMENTS, SERVE}
    assert all(s.running and s.healthy for s in statuses.values()), statuses
    assert httpx.get(f"{config.stack.evidently_url}/api/version", timeout=5).status_code == 200
    assert served.deployments_pid == statuses[DEPLOYMENTS].pid
    assert served.serving_pid == statuses[SERVE].pid


def test_the_served_champion_answers_the_sample_request(
    served, champion: TrainingOutcome, config: ProjectConfig, config_file: Path
) -> None:
    # Started before any champion existed; `mlops predict` waits for it to pick one up.
    answers = {}
    for form in ("records", "split", "arrow"):  # the same rows as JSON records, dataframe_split, Arrow
        result = subprocess.run(
            [
                str(Path(sys.executable).parent / "mlops"),
                "--config",
                str(config_file),
                "predict",
                "--period",
                BATCH,
                "--rows",
                "2",
                "--wait",
                "60",
                "--form",
                form,
            ],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=REPO_ROOT,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"curl -s -X POST {served.serving_url}/predict" in result.stdout
        assert result.stdout.count(f"champion v{champion.model_version}") == 2, result.stdout
        answers[form] = [line for line in result.stdout.splitlines() if f"p({config.target.label})=" in line]
    assert len(answers["records"]) == 2
    assert answers["split"] == answers["records"] and answers["arrow"] == answers["records"]


def test_deployments_carry_their_schedules_trigger_and_defaults(
    served, prefect_and_mlflow, config: ProjectConfig, config_file: Path
) -> None:
    project = config.project
    with get_client(sync_client=True) as client:
        found = {
            name: client.read_deployment_by_name(f"{name}/{project}")
            for name in (
                "training-pipeline",
                "monitoring",
                "retraining",
                "promotion",
                "ground-truth",
                "rollout",
            )
        }
        automations = client.read_automations_by_name(f"retrain {MODEL} on drift")
    for deployment in found.values():
        assert deployment.parameters == {"request": {"config_path": str(config_file)}}
    crons = {name: [s.schedule.cron for s in d.schedules if s.active] for name, d in found.items()}
    assert crons == {
        "training-pipeline": [],
        "monitoring": [config.monitoring.monitoring_cron],
        "retraining": [config.monitoring.retraining_cron],
        "promotion": [],
        "ground-truth": [],
        "rollout": [],
    }
    assert found["retraining"].global_concurrency_limit is not None
    (automation,) = automations
    assert automation.trigger.expect == {"mlops.drift.detected"}
    assert automation.trigger.match.model_dump() == {
        "prefect.resource.id": f"mlops.model.{MODEL}",
        "mlops.retraining": "requested",
    }
    (action,) = automation.actions
    assert action.deployment_id == found["retraining"].id
    assert action.parameters["request"]["batch"] == "{{ event.payload.period }}"


def _wait_final(flow_run_id: Any) -> FlowRun:
    return wait_final(flow_run_id, WAIT_SECONDS)


def test_a_run_started_like_the_ui_does_what_the_cli_does(
    served, champion: TrainingOutcome, config_file: Path, config: ProjectConfig
) -> None:
    # The UI's form sends the deployment's parameters with the fields the user filled in.
    parameters = {"request": {"config_path": str(config_file), "period": BATCH}}
    # timeout=0: only create the run; nothing in this process runs it, the served process must.
    started = run_deployment(f"monitoring/{config.project}", parameters=parameters, timeout=0)
    finished = _wait_final(started.id)
    assert finished.state.is_completed(), finished.state.message
    remote: MonitoringOutcome = finished.state.result()
    local = monitoring(MonitoringRequest(config_path=str(config_file), period=BATCH))
    assert remote.verdict == local.verdict and remote.batch == local.batch
    assert remote.figures == pytest.approx(local.figures)


def _triggered_runs(deployment_id: Any, since: datetime) -> list[FlowRun]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC,
            limit=20,
        )
    return [r for r in runs if r.created and r.created >= since]


def test_drift_starts_the_retraining_deployment_for_the_month(
    served, champion: TrainingOutcome, config: ProjectConfig, tmp_path: Path
) -> None:
    hot = copy_landing(config, tmp_path)
    store = landing(hot)
    weather = read_landed(store, "weather.parquet")
    weather.loc[weather["time_hour"].dt.strftime("%Y-%m") == BATCH, "temp"] += 15
    write_landed(store, "weather.parquet", weather)
    hot_file = write_config(hot, tmp_path)
    with get_client(sync_client=True) as client:
        retraining_id = client.read_deployment_by_name(f"retraining/{config.project}").id

    since = datetime.now(UTC)
    verdict = monitoring(MonitoringRequest(config_path=str(hot_file), period=BATCH))
    assert verdict.verdict == DRIFT_RETRAIN  # emits mlops.drift.detected

    deadline = time.monotonic() + 60
    while not (runs := _triggered_runs(retraining_id, since)):
        if time.monotonic() > deadline:
            pytest.fail("the drift event started no retraining run within 60 s")
        time.sleep(1)
    (triggered,) = runs
    assert triggered.parameters["request"]["batch"] == BATCH
    assert triggered.parameters["request"]["config_path"] == str(hot_file.resolve())
    assert triggered.parameters["request"]["reason"].startswith(f"drift_retrain on flights/{BATCH}")

    finished = _wait_final(triggered.id)
    assert finished.state.is_completed(), finished.state.message
    outcome: RetrainingOutcome = finished.state.result()
    assert outcome.batch == BATCH and outcome.periods == ["2013-05", "2013-06", "2013-07"]
    assert outcome.model_version not in (None, champion.model_version)
    assert outcome.promoted is not None and outcome.promotion_run_url  # the gates judged it on August
    version = MlflowClient(config.stack.tracking_uri).get_model_version(MODEL, outcome.model_version)
    assert version.tags["periods"] == "2013-05..2013-07"
