"""The real training flow on sampled real data, against a real Prefect API and MLflow server."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow.artifacts
import mlflow.sklearn
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.sorting import TaskRunSort

from flows.training import TrainingOutcome, TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import ProjectConfig, save_config
from mlops.storage import Store, open_store, sha256_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_and_mlflow(stack, stack_config: ProjectConfig) -> Iterator[None]:
    with client_settings(stack_config):
        yield


@pytest.fixture(scope="module")
def config_file(stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_config(stack_config, tmp_path_factory.mktemp("cfg") / "mlops.yaml")


@pytest.fixture(scope="module")
def first_run(prefect_and_mlflow, sampled_landing: Store, config_file: Path) -> TrainingOutcome:
    return training_pipeline(TrainingRequest(start="2013-01", end="2013-06", config_path=str(config_file)))


def _task_states(flow_run_url: str) -> dict[str, str]:
    flow_run_id = flow_run_url.rsplit("/", 1)[-1]
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,  # the sync client sends sort=None otherwise: 422
            limit=200,
        )
    return {run.name: run.state.name for run in runs}


def test_registers_a_challenger_with_metrics_signature_and_lineage(
    first_run: TrainingOutcome, stack_config: ProjectConfig, sampled_landing: Store
) -> None:
    client = MlflowClient(stack_config.stack.tracking_uri)
    name = stack_config.registry.model_name
    version = client.get_model_version_by_alias(name, "challenger")
    assert version.version == first_run.model_version

    # Lineage: each landing file's sha256 is recorded on the version.
    snapshots = json.loads(version.tags["snapshots"])
    for period in ("2013-01", "2013-03", "2013-06"):
        landed = sampled_landing.read_bytes(f"flights/{period}.parquet")
        assert snapshots[f"flights/{period}"] == sha256_bytes(landed)
    assert snapshots["weather/static"] == sha256_bytes(sampled_landing.read_bytes("weather.parquet"))
    assert version.tags["config_hash"] == stack_config.fingerprint
    assert version.tags["validation"] == "passed"
    assert version.tags["git_commit"]
    # A few tags a person filters on; the metrics are on the run, where MLflow plots them.
    assert not any(k.startswith("holdout_") for k in version.tags)
    assert client.get_run(version.run_id).data.metrics["holdout_roc_auc"] == pytest.approx(
        first_run.metrics["holdout_roc_auc"]
    )

    # The parent run holds the headline metrics, datasets and one nested run per candidate.
    run = client.get_run(version.run_id)
    assert run.data.metrics["holdout_roc_auc"] > 0.6
    assert {d.dataset.name for d in run.inputs.dataset_inputs} >= {
        "flights/2013-01",
        "flights/2013-06",
        "planes/static",
    }
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    assert {c.data.tags["candidate"] for c in children} == {c.name for c in stack_config.training.candidates}
    validation = {a.path for a in client.list_artifacts(run.info.run_id, "validation")}
    assert "validation/data_docs" in validation  # GX's own HTML, beside one JSON result per batch
    assert any(p.startswith("validation/flights-2013-06") and p.endswith(".json") for p in validation)
    plots = {a.path for a in client.list_artifacts(children[0].info.run_id, "plots")}
    assert "plots/roc_curve.png" in plots and "plots/permutation_importance.png" in plots

    import mlflow.models

    # The model takes a row as it lands: its signature is the batch's columns it reads (the
    # join keys, the inputs of derived features, the features the batch holds), never a
    # looked-up or derived column, and never the target.
    info = mlflow.models.get_model_info(f"models:/{name}/{version.version}")
    assert info.signature is not None
    inputs = set(info.signature.inputs.input_names())
    landed = pd.read_parquet(io.BytesIO(sampled_landing.read_bytes("flights/2013-06.parquet")))
    assert inputs <= set(landed.columns)
    assert {"origin", "time_hour", "tailnum", "year"} <= inputs  # join keys; `year` feeds plane_age
    looked_up = {c for j in stack_config.data.joins for c in j.columns.values()}
    assert not inputs & (looked_up | set(stack_config.features.derived) | {stack_config.target.column})


def test_the_standard_mlflow_client_scores_rows_as_they_land_with_no_project_code(
    first_run: TrainingOutcome, stack_config: ProjectConfig, sampled_landing: Store, tmp_path: Path
) -> None:
    """`mlflow.pyfunc.load_model(...).predict(rows)` on rows exactly as they land, in a Python
    that cannot import the project (site-packages without the editable install's hook): the
    model's declared code is all it needs. Its answers equal the training path's (features
    built by the training flow's own task), row for row."""
    from mlflow.tracking import MlflowClient

    from tasks.features import build_training_frame
    from tasks.ingest import TimeColumn, read_table

    times = TimeColumn.of(stack_config.data)

    def read(key: str) -> pd.DataFrame:
        return read_table(sampled_landing.read_bytes(key), key, times)

    landed = pd.read_parquet(io.BytesIO(sampled_landing.read_bytes("flights/2013-06.parquet")))  # as is
    dims = {t: read(stack_config.data.tables[t].key()) for t in ("weather", "planes")}
    rows = landed[landed[stack_config.target.column].notna()].head(300)
    rows = rows.sort_values(stack_config.data.time_column, kind="stable").reset_index(drop=True)
    rows.to_parquet(tmp_path / "rows.parquet")  # every column, as it landed (arr_delay too)
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    script = (
        "import sys\n"
        f"sys.path = [p for p in sys.path if 'site-packages' not in p] + [{site_packages!r}]\n"
        "try:\n    import mlops\n    sys.exit('the project is importable: the test proves nothing')\n"
        "except ImportError:\n    pass\n"
        "import mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri({stack_config.stack.tracking_uri!r})\n"
        f"model = mlflow.pyfunc.load_model('models:/{stack_config.registry.model_name}@challenger')\n"
        f"rows = pd.read_parquet({str(tmp_path / 'rows.parquet')!r})\n"
        "import mlops.record_features\n"
        "print(mlops.record_features.__file__)\n"
        "print(pd.DataFrame(model.predict(rows)).to_json(orient='values', double_precision=15))\n"
    )
    done = subprocess.run(
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, timeout=180, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    shipped, answer = done.stdout.strip().splitlines()[-2:]
    assert "/code/mlops/record_features.py" in shipped  # the model's own copy
    proba = pd.read_json(io.StringIO(answer)).to_numpy()

    training = build_training_frame({"2013-06": rows}, dims, stack_config, "standard-client")
    version = MlflowClient(stack_config.stack.tracking_uri).get_model_version_by_alias(
        stack_config.registry.model_name, "challenger"
    )
    pipeline = mlflow.sklearn.load_model(f"models:/{stack_config.registry.model_name}/{version.version}")
    expected = pipeline.predict_proba(training.frame[stack_config.features.columns])
    assert proba.shape == (len(rows), 2)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=1e-12)
    assert np.ptp(proba[:, 1]) > 0  # the rows are told apart, not scored alike


def test_rerun_is_cached_and_registers_nothing_new(
    first_run: TrainingOutcome, config_file: Path, stack_config: ProjectConfig
) -> None:
    client = MlflowClient(stack_config.stack.tracking_uri)
    before = client.search_model_versions(f"name = '{stack_config.registry.model_name}'")
    again = training_pipeline(TrainingRequest(start="2013-01", end="2013-06", config_path=str(config_file)))
    after = client.search_model_versions(f"name = '{stack_config.registry.model_name}'")
    assert again.reused and again.model_version == first_run.model_version
    assert len(after) == len(before)
    states = _task_states(again.prefect_run_url)
    trained = {name: state for name, state in states.items() if name.startswith("train ")}
    assert trained and set(trained.values()) == {"Cached"}, states


def _broken_landing(
    stack_config: ProjectConfig, sampled_landing: Store, tmp: Path, period: str, data: bytes
) -> Path:
    """A copy of the landing zone with one month replaced; returns its config file."""
    landing = open_store(str(tmp / "landing"), stack_config.data.s3)
    for key in sampled_landing.list():
        landing.write_bytes(key, sampled_landing.read_bytes(key))
    landing.write_bytes(f"flights/{period}.parquet", data)
    data_cfg = stack_config.data.model_copy(
        update={"landing_uri": str(tmp / "landing"), "quarantine_uri": str(tmp / "quarantine")}
    )
    return save_config(stack_config.model_copy(update={"data": data_cfg}), tmp / "mlops.yaml")


def _failed_run(config_path: Path) -> tuple[str, str]:
    state = training_pipeline(
        TrainingRequest(start="2013-01", end="2013-06", config_path=str(config_path)), return_state=True
    )
    assert state.is_failed()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(state.state_details.flow_run_id)
    return run.state.type.value, run.state.message or ""


def test_truncated_month_fails_the_run_and_is_quarantined(
    prefect_and_mlflow, stack_config: ProjectConfig, sampled_landing: Store, tmp_path: Path
) -> None:
    good = sampled_landing.read_bytes("flights/2013-02.parquet")
    config_path = _broken_landing(stack_config, sampled_landing, tmp_path, "2013-02", good[: len(good) // 2])
    state, message = _failed_run(config_path)
    assert state == "FAILED"
    assert "flights/2013-02.parquet" in message and "truncated" in message  # visible in the Prefect UI
    reasons = list((tmp_path / "quarantine").rglob("reason.json"))
    assert len(reasons) == 1 and "truncated" in json.loads(reasons[0].read_text())["reason"]


def test_out_of_range_month_fails_validation_and_is_quarantined(
    prefect_and_mlflow, stack_config: ProjectConfig, sampled_landing: Store, tmp_path: Path
) -> None:
    frame = pd.read_parquet(io.BytesIO(sampled_landing.read_bytes("flights/2013-03.parquet")))
    frame.loc[frame.index[:25], "distance"] = -100
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    bad = buffer.getvalue()
    config_path = _broken_landing(stack_config, sampled_landing, tmp_path, "2013-03", bad)
    state, message = _failed_run(config_path)
    assert state == "FAILED"
    assert "distance" in message and "25 unexpected rows" in message
    # The bad batch left the snapshot store for quarantine; nothing else was touched.
    snapshots = open_store(stack_config.store_uri(stack_config.data.snapshot_uri), stack_config.data.s3)
    assert not snapshots.exists(f"flights/{sha256_bytes(bad)}.parquet")
    assert snapshots.exists(
        f"flights/{sha256_bytes(sampled_landing.read_bytes('flights/2013-01.parquet'))}.parquet"
    )
    assert list((tmp_path / "quarantine" / "flights" / "2013-03").rglob("*.parquet"))


def test_landing_zone_on_s3(
    first_run: TrainingOutcome,
    stack_config: ProjectConfig,
    sampled_landing: Store,
    moto_s3: str,
    tmp_path: Path,
) -> None:
    """The same months, dropped in an S3 bucket (a moto server over HTTP) instead of a folder."""
    import boto3

    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket="upstream")
    s3 = stack_config.data.s3.model_copy(update={"endpoint_url": moto_s3})
    bucket = open_store("s3://upstream/drops", s3)
    for key in sampled_landing.list():
        bucket.write_bytes(key, sampled_landing.read_bytes(key))
    data = stack_config.data.model_copy(
        update={"landing_uri": "s3://upstream/drops", "s3": s3, "snapshot_uri": str(tmp_path / "snapshots")}
    )
    config_path = save_config(stack_config.model_copy(update={"data": data}), tmp_path / "s3.yaml")

    outcome = training_pipeline(TrainingRequest(start="2013-01", end="2013-06", config_path=str(config_path)))

    # Same bytes, same config: the same model version, found rather than registered again.
    assert outcome.model_version == first_run.model_version and outcome.reused
    run = MlflowClient(stack_config.stack.tracking_uri).get_run(outcome.mlflow_run_url.rsplit("/", 1)[-1])
    inputs = mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/lineage/inputs.json")
    by_name = {i["name"]: i for i in inputs}
    assert by_name["flights/2013-04"]["source_uri"] == "s3://upstream/drops/flights/2013-04.parquet"
    assert by_name["flights/2013-04"]["sha256"] == sha256_bytes(bucket.read_bytes("flights/2013-04.parquet"))
    assert (tmp_path / "snapshots" / "flights").is_dir()
