"""The monitoring flow on sampled real months against a real Prefect API and MLflow server.

The champion is trained once for the module on May-July; August, close to them, is the
calm batch, and broken copies of August (shifted, emptied, cut) must each end in a verdict
that names what happened, never in a failed run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact

from flows.monitoring import DRIFT_EVENT, MONITORED_EVENT, MonitoringOutcome, MonitoringRequest, monitoring
from flows.training import TrainingOutcome, TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import ProjectConfig
from mlops.objective import Objective
from mlops.prediction_log import read_labelled_log
from mlops.storage import Stores, open_store
from mlops.tracking import Tracker
from serving.samples import feature_frame
from tasks.drift import CANNOT_JUDGE, DRIFT_RETRAIN, NO_DRIFT, PERFORMANCE_DROP_RETRAIN
from tests.conftest import find_events
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
    return find_events(
        name,
        since,
        timeout,
        resource={"id": [f"mlops.model.{MODEL}"]},  # other modules monitor the same bytes
        any_resource={"labels": {"mlops.batch": [batch]}},
    )


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


def _serve(config: ProjectConfig, version: str, folder: Path) -> tuple[ProjectConfig, pd.DataFrame]:
    """August's records as the service would have logged them over two days: the
    champion's own scores, every tenth row a shadow score, every seventh sent without a
    key. Returns a config whose prediction log (and labelled log) is under `folder`."""
    served = config.model_copy(
        update={
            "serving": config.serving.model_copy(update={"prediction_log_uri": str(folder / "predictions")})
        }
    )
    frame = feature_frame(config, landing(config), BATCH)
    model = Tracker(config.stack.tracking_uri, config.registry.experiment).load_model(MODEL, version)
    objective = Objective.of(config)
    rows = np.arange(len(frame))
    log = frame.assign(
        key=frame["key"].where(rows % 7 != 0, None),
        score=objective.score_of(objective.predict(model, frame[config.features.columns])),
        model_name=MODEL,
        model_version=version,
        arm="champion",
        mode="shadow",
        served=rows % 10 != 0,
        request_id=[f"r{i}" for i in rows],
        timestamp=[datetime(2026, 1, 2 + i * 2 // len(frame), tzinfo=UTC) for i in rows],
    )
    log_store = open_store(served.store_uri(served.serving.prediction_log_uri), config.data.s3)
    write_landed(log_store, "date=2026-01-02/part-0.parquet", log.iloc[: len(log) // 2])
    write_landed(log_store, "date=2026-01-03/part-0.parquet", log.iloc[len(log) // 2 :])
    return served, log


def _monitor_log(config: ProjectConfig, folder: Path) -> MonitoringOutcome:
    request = {"source": "prediction_log", "first_day": date(2026, 1, 1), "last_day": date(2026, 1, 3)}
    return monitoring(MonitoringRequest(config_path=str(write_config(config, folder)), **request))


def test_the_served_rows_of_the_prediction_log_are_a_batch_judged_on_joined_labels(
    champion, calm: MonitoringOutcome, config: ProjectConfig, tmp_path: Path
) -> None:
    served, log = _serve(config, champion.model_version, tmp_path)
    outcome = _monitor_log(served, tmp_path)
    assert outcome.batch == "predictions/2026-01-01..2026-01-03" and outcome.period is None
    assert outcome.verdict == NO_DRIFT, outcome.reasons

    # The labels of August joined by key: every logged row is in the labelled log, with its
    # label or why not; a row without a key is counted, not guessed.
    labelled = read_labelled_log(Stores.from_config(served).labelled_predictions)
    assert len(labelled) == len(log) and labelled["request_id"].tolist() == log["request_id"].tolist()
    status = labelled["label_status"].value_counts().to_dict()
    assert status["no_key"] == int(log["key"].isna().sum())
    cancelled = int(read_landed(landing(config), FLIGHTS)["arr_delay"].isna().sum())
    assert 0 < status.get("no_label_yet", 0) <= cancelled  # cancelled flights have no label
    joined_served = int(((labelled["label_status"] == "joined") & labelled["served"]).sum())
    assert outcome.figures["rows"] == joined_served
    assert any(
        note.startswith(f"{status['joined']} of {len(log)} logged rows joined") for note in outcome.notes
    )
    # Judged on those rows, the champion's quality is about that of the landed month ...
    assert outcome.figures["current_roc_auc"] == pytest.approx(calm.figures["current_roc_auc"], abs=0.03)
    # ... and the arm's live quality, from its logged scores, is the same model on the same rows.
    version = champion.model_version
    assert outcome.figures[f"live_champion_v{version}_labelled_rows"] == status["joined"]
    assert outcome.figures[f"live_champion_v{version}_roc_auc"] == pytest.approx(
        outcome.figures["current_roc_auc"], abs=0.03
    )
    artifacts = _artifacts(_flow_run_id(outcome))
    assert {"live-quality", "ground-truth", "ground-truth-by-arm"} <= set(artifacts)


def test_labels_that_contradict_the_served_scores_are_a_performance_drop(
    champion, config: ProjectConfig, tmp_path: Path
) -> None:
    """The world changed after serving: August's outcomes, as they land, no longer follow
    the features (shuffled). Joined to the log, they make the champion's live quality fall
    far below its holdout, while the features themselves did not drift."""
    strict = copy_landing(config, tmp_path).model_copy(
        update={"monitoring": config.monitoring.model_copy(update={"max_metric_drop": 0.1})}
    )
    served, _ = _serve(strict, champion.model_version, tmp_path)
    store = landing(strict)
    month = read_landed(store, FLIGHTS)
    shuffled = np.random.default_rng(3).permutation(month["arr_delay"].to_numpy())
    write_landed(store, FLIGHTS, month.assign(arr_delay=shuffled))

    outcome = _monitor_log(served, tmp_path)
    assert outcome.verdict == PERFORMANCE_DROP_RETRAIN, outcome.reasons
    assert "below the champion's holdout" in outcome.reasons[0]
    assert outcome.figures["current_roc_auc"] < 0.6


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
