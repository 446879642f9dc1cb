"""The monitoring flow on sampled real months against a real Prefect API and MLflow server.

The champion is trained once for the module on May-July; August, close to them, is the
calm batch, and broken copies of August (shifted, emptied, cut) must each end in a verdict
that names what happened, never in a failed run.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact

from flows.monitoring import DRIFT_EVENT, MONITORED_EVENT, MonitoringOutcome, MonitoringRequest, monitoring
from flows.training import TrainingOutcome, TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import ProjectConfig
from mlops.storage import open_store
from tasks.drift import CANNOT_JUDGE, DRIFT_RETRAIN, NO_DRIFT
from tests.integration.drift_setup import (
    copy_landing,
    drift_config,
    landing,
    read_landed,
    write_config,
    write_landed,
)

pytestmark = pytest.mark.integration

MODEL = "flight-delay-monitoring-test"
BATCH = "2013-08"
FLIGHTS = f"flights/{BATCH}.parquet"


@pytest.fixture(scope="module")
def config(stack, stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    # ROC-AUC on ~2,200 sampled rows moves by a few hundredths from month to month: the
    # performance verdict is covered by the unit tests, these isolate drift in the data.
    return drift_config(
        stack_config,
        tmp_path_factory.mktemp("monitoring"),
        MODEL,
        ["2013-05", "2013-06", "2013-07", BATCH],
        max_metric_drop=1.0,
    )


@pytest.fixture(scope="module")
def config_file(config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_config(config, tmp_path_factory.mktemp("monitoring-config"))


@pytest.fixture(scope="module")
def prefect_and_mlflow(stack, config: ProjectConfig) -> Iterator[None]:
    with client_settings(config):
        yield


@pytest.fixture(scope="module")
def champion(prefect_and_mlflow, config: ProjectConfig, config_file: Path) -> TrainingOutcome:
    trained = training_pipeline(TrainingRequest(start="2013-05", end="2013-07", config_path=str(config_file)))
    MlflowClient(config.stack.tracking_uri).set_registered_model_alias(
        MODEL, "champion", trained.model_version
    )
    return trained


@pytest.fixture(scope="module")
def calm(champion: TrainingOutcome, config_file: Path) -> MonitoringOutcome:
    return monitoring(MonitoringRequest(config_path=str(config_file), period=BATCH))


def _flow_run_id(outcome: MonitoringOutcome) -> str:
    return outcome.prefect_run_url.rsplit("/", 1)[-1]


def _artifacts(flow_run_id: str) -> dict[str, Artifact]:
    query = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC", "limit": 50}
    with get_client(sync_client=True) as client:
        found = Artifact.model_validate_list(client.request("POST", "/artifacts/filter", json=query).json())
    return {a.key: a for a in reversed(found)}


def events(name: str, batch: str, since: datetime, timeout: float = 30) -> list[dict]:
    """Events of this name for a batch, waiting for the client's background sender."""
    query = {
        "filter": {
            "event": {"name": [name]},
            "occurred": {
                "since": since.isoformat(),
                "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            },
            "resource": {"id": [f"mlops.model.{MODEL}"]},  # other modules monitor the same bytes
            "any_resource": {"labels": {"mlops.batch": [batch]}},
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


def _run(config: ProjectConfig, folder: Path, **request) -> MonitoringOutcome:
    path = write_config(config, folder)
    return monitoring(MonitoringRequest(config_path=str(path), period=BATCH, **request))


# -- a calm month -------------------------------------------------------------------------


def test_a_month_close_to_the_reference_is_no_drift(
    calm: MonitoringOutcome, champion: TrainingOutcome
) -> None:
    assert calm.verdict == NO_DRIFT, calm.reasons
    assert calm.model_name == MODEL and calm.model_version == champion.model_version
    assert calm.drifted_columns == [] and calm.unassessable == {}
    assert calm.figures["rows"] > 1500 and calm.figures["reference_rows"] > 4500
    assert calm.figures["drift_temp"] < 1.0  # August against May-July: about half a deviation
    assert 0.6 < calm.figures["current_roc_auc"] < 0.9
    assert "month" not in {k.removeprefix("drift_") for k in calm.figures}  # excluded by the config


def test_the_report_and_figures_are_in_mlflow(calm: MonitoringOutcome, config: ProjectConfig) -> None:
    client = MlflowClient(config.stack.tracking_uri)
    run = client.get_run(calm.mlflow_run_url.rsplit("/", 1)[-1])
    assert run.data.tags["verdict"] == NO_DRIFT and run.data.tags["model_version"] == calm.model_version
    assert run.data.metrics["drift_share"] == calm.figures["drift_share"]
    assert {"n_drifted_columns", "current_roc_auc", "prediction_drift", "drift_temp"} <= set(run.data.metrics)
    files = {a.path for a in client.list_artifacts(run.info.run_id, "monitoring")}
    assert files == {"monitoring/report.html", "monitoring/evidently.json", "monitoring/summary.json"}
    summary = json.loads(
        Path(client.download_artifacts(run.info.run_id, "monitoring/summary.json")).read_text()
    )
    assert summary["verdict"] == NO_DRIFT and summary["model"]["version"] == calm.model_version
    html = Path(client.download_artifacts(run.info.run_id, "monitoring/report.html")).read_text()
    assert "Wasserstein distance (normed)" in html and "Jensen-Shannon distance" in html
    assert calm.report_url.endswith(f"{run.info.run_id}/artifactPath/monitoring/report.html")


def test_the_report_is_in_the_evidently_workspace(calm: MonitoringOutcome, config: ProjectConfig) -> None:
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(config.state_dir / config.monitoring.workspace_dir))
    (project,) = workspace.search_project(f"{config.project} / {MODEL}")
    snapshot_id = calm.evidently_url.rsplit("/", 1)[-1]
    assert snapshot_id in {str(s) for s in workspace.list_runs(project.id)}
    assert calm.evidently_url.startswith(f"{config.stack.evidently_url}/projects/{project.id}/reports/")


def test_prefect_shows_the_verdict_and_gets_the_event(calm: MonitoringOutcome, config: ProjectConfig) -> None:
    found = _artifacts(_flow_run_id(calm))
    markdown = found["drift-flights-2013-08"].data
    assert "**no_drift**" in markdown and calm.mlflow_run_url in markdown and calm.evidently_url in markdown
    assert {row["column"] for row in json.loads(found["drift-columns"].data)} >= {"temp", "carrier", "dest"}
    (event,) = events(MONITORED_EVENT, calm.batch, datetime.now(UTC) - timedelta(hours=1))
    assert event["resource"]["prefect.resource.id"] == f"mlops.model.{MODEL}"
    assert event["payload"]["verdict"] == NO_DRIFT and event["payload"]["period"] == BATCH
    assert event["payload"]["figures"]["drift_share"] == calm.figures["drift_share"]
    assert events(DRIFT_EVENT, calm.batch, datetime.now(UTC) - timedelta(hours=1), timeout=2) == []


# -- an injected shift --------------------------------------------------------------------


def test_a_hotter_month_drifts_on_temperature_alone(
    champion: TrainingOutcome, calm: MonitoringOutcome, config: ProjectConfig, tmp_path: Path
) -> None:
    since = datetime.now(UTC)
    shifted = copy_landing(config, tmp_path)
    store = landing(shifted)
    weather = read_landed(store, "weather.parquet")
    august = weather["time_hour"].dt.strftime("%Y-%m") == BATCH
    weather.loc[august, "temp"] += 15  # °F, at the origin at the scheduled hour: through the join
    write_landed(store, "weather.parquet", weather)

    outcome = _run(shifted, tmp_path)
    assert outcome.verdict == DRIFT_RETRAIN and outcome.retrain
    assert outcome.drifted_columns == ["temp"], outcome.figures
    assert outcome.figures["drift_temp"] > calm.figures["drift_temp"] + 1.0
    assert outcome.figures["drift_dewp"] == pytest.approx(calm.figures["drift_dewp"])  # same table, untouched
    assert any(r.startswith("key feature(s) drifted: temp") for r in outcome.reasons)
    (event,) = events(DRIFT_EVENT, outcome.batch, since)
    assert event["payload"]["verdict"] == DRIFT_RETRAIN and event["payload"]["period"] == BATCH
    assert event["payload"]["config_path"] == str((tmp_path / "mlops.yaml").resolve())
    assert event["resource"]["mlops.retraining"] == "requested"
    assert event["payload"]["drifted_columns"] == ["temp"]


def test_a_month_without_its_largest_carrier_drifts_on_the_carrier_and_its_routes(
    champion: TrainingOutcome, calm: MonitoringOutcome, config: ProjectConfig, tmp_path: Path
) -> None:
    shifted = copy_landing(config, tmp_path)
    store = landing(shifted)
    flights = read_landed(store, FLIGHTS)
    write_landed(store, FLIGHTS, flights[flights["carrier"] != "UA"])  # ~17% of the flights

    outcome = _run(shifted, tmp_path)
    assert outcome.verdict == DRIFT_RETRAIN
    assert "carrier" in outcome.drifted_columns
    assert outcome.figures["drift_carrier"] > 2 * config.monitoring.threshold
    # United flies its own routes and planes: those move with it; the weather does not.
    weather = {"temp", "dewp", "humid", "wind_dir", "wind_speed", "wind_gust", "precip", "pressure", "visib"}
    assert not weather & set(outcome.drifted_columns)
    assert set(outcome.drifted_columns) <= {
        "carrier",
        "dest",
        "distance",
        "origin",
        "seats",
        "manufacturer",
        "plane_age",
        "engines",
        "sched_dep_time",
        "sched_arr_time",
    }


# -- bad input ----------------------------------------------------------------------------


def _break(config: ProjectConfig, folder: Path, change) -> MonitoringOutcome:
    broken = copy_landing(config, folder)
    store = landing(broken)
    write_landed(store, FLIGHTS, change(read_landed(store, FLIGHTS)))
    return _run(broken, folder)


def test_an_empty_month_cannot_be_judged(champion, config: ProjectConfig, tmp_path: Path) -> None:
    outcome = _break(config, tmp_path, lambda f: f.iloc[:0])
    assert outcome.verdict == CANNOT_JUDGE
    assert "table has no rows" in outcome.reasons[0] and "quarantined at" in outcome.reasons[0]
    assert outcome.figures == {"rows": 0.0} and outcome.evidently_url == ""
    assert MlflowClient(config.stack.tracking_uri).get_run(outcome.mlflow_run_url.rsplit("/", 1)[-1])


def test_ten_rows_get_a_report_but_no_verdict(champion, config: ProjectConfig, tmp_path: Path) -> None:
    outcome = _break(config, tmp_path, lambda f: f.head(10))
    assert outcome.verdict == CANNOT_JUDGE
    assert outcome.reasons == [f"10 rows: fewer than monitoring.min_rows={config.monitoring.min_rows}"]
    assert outcome.evidently_url  # Evidently still ran: the report shows what the rows look like


def test_an_all_null_column_is_named_and_the_rest_judged(
    champion, config: ProjectConfig, tmp_path: Path
) -> None:
    outcome = _break(config, tmp_path, lambda f: f.assign(distance=np.nan))
    assert outcome.verdict == NO_DRIFT
    assert outcome.unassessable == {
        "distance": f"all {int(outcome.figures['rows'])} values are null in the batch"
    }
    assert "drift_distance" not in outcome.figures and "drift_temp" in outcome.figures
    assert any("not assessed: distance" in r for r in outcome.reasons)


def test_a_missing_key_feature_blocks_the_verdict(champion, config: ProjectConfig, tmp_path: Path) -> None:
    outcome = _break(config, tmp_path, lambda f: f.drop(columns=["dest"]))
    assert outcome.verdict == CANNOT_JUDGE
    assert outcome.unassessable == {"dest": "missing from the batch"}
    assert outcome.reasons == ["key feature dest could not be assessed: missing from the batch"]


def test_unseen_categories_are_reported(champion, config: ProjectConfig, tmp_path: Path) -> None:
    def rename(flights):
        flights = flights.copy()
        flights.loc[flights.index[: len(flights) // 5], "dest"] = "ZZZ"
        return flights

    outcome = _break(config, tmp_path, rename)
    assert outcome.unseen["dest"]["categories"] == ["ZZZ"]
    assert 0.15 < outcome.unseen["dest"]["share"] < 0.25
    assert outcome.verdict == DRIFT_RETRAIN and "dest" in outcome.drifted_columns


# -- the prediction log -------------------------------------------------------------------


def test_the_served_rows_of_the_prediction_log_are_a_batch(
    champion, calm: MonitoringOutcome, config: ProjectConfig, config_file: Path
) -> None:
    from tasks.drift import build_current_frame

    store = landing(config)
    dims = {"weather": read_landed(store, "weather.parquet"), "planes": read_landed(store, "planes.parquet")}
    frame = build_current_frame(read_landed(store, FLIGHTS), dims, config).frame
    log = frame[config.features.columns].assign(
        score=0.2,
        label=frame[config.target.label].astype(float),
        model_name=MODEL,
        model_version=champion.model_version,
        arm="a",
        mode="none",
        served=np.arange(len(frame)) % 10 != 0,  # every tenth row was a shadow prediction
        request_id="r",
        ts=datetime(2026, 1, 2, tzinfo=UTC),
    )
    log_store = open_store(config.store_uri(config.serving.prediction_log_uri), config.data.s3)
    write_landed(log_store, "date=2026-01-02/part-0.parquet", log.iloc[: len(log) // 2])
    write_landed(log_store, "date=2026-01-03/part-0.parquet", log.iloc[len(log) // 2 :])

    outcome = monitoring(
        MonitoringRequest(
            config_path=str(config_file),
            source="prediction_log",
            first_day=date(2026, 1, 1),
            last_day=date(2026, 1, 3),
        )
    )
    assert outcome.batch == "predictions/2026-01-01..2026-01-03" and outcome.period is None
    assert outcome.figures["rows"] == int(log["served"].sum())
    assert outcome.verdict == NO_DRIFT, outcome.reasons
    # the same rows as the landed month, minus the shadow ones: the same figures, nearly
    assert outcome.figures["current_roc_auc"] == pytest.approx(calm.figures["current_roc_auc"], abs=0.03)


# -- the command line ---------------------------------------------------------------------


def test_the_cli_prints_the_verdict_and_exits_by_it(champion, calm, config_file: Path) -> None:
    from typer.testing import CliRunner

    from app.cli import app

    runner = CliRunner()
    calm_run = runner.invoke(app, ["--config", str(config_file), "monitor", "--period", BATCH])
    assert calm_run.exit_code == 0, calm_run.output
    assert f"flights/{BATCH}" in calm_run.output and "no_drift" in calm_run.output
    assert "Evidently UI:" in calm_run.output and "HTML report:" in calm_run.output
    nothing = runner.invoke(
        app,
        [
            "--config",
            str(config_file),
            "monitor",
            "--log",
            "--first-day",
            "2020-01-01",
            "--last-day",
            "2020-01-02",
        ],
    )
    assert nothing.exit_code == 4, nothing.output  # cannot judge
    assert "no predictions were logged" in nothing.output
    wrong = runner.invoke(app, ["--config", str(config_file), "monitor", "--period", "2013-13"])
    assert wrong.exit_code == 1 and "error: period '2013-13' is not of the form YYYY-MM" in wrong.output
