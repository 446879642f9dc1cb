"""Lineage and reproducibility against a real Prefect API and MLflow server: a version trained
on two sampled months, judged by the promotion gates and logged by the prediction writer,
traced back to its landing files, then rebuilt from its records to the same numbers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.metadata import version as installed_version
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import Artifact
from prefect.client.schemas.sorting import TaskRunSort
from typer.testing import CliRunner

from app.cli import app
from flows.promotion import PromotionDecision, PromotionRequest, promotion
from flows.reproduce import ReproduceRequest, reproduce
from flows.stages import lineage_artifact_key
from flows.training import TrainingOutcome, TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import (
    ApprovalConfig,
    CandidateConfig,
    Distribution,
    OperationalGateConfig,
    ProjectConfig,
    QualityGateConfig,
    SliceGateConfig,
    save_config,
)
from mlops.errors import LandingError
from mlops.prediction_log import log_batch, log_schema
from mlops.storage import Store, open_store, sha256_bytes
from serving.predlog import PredictionLog

pytestmark = pytest.mark.integration

LANDING_KEYS = {
    "flights/2013-01": "flights/2013-01.parquet",
    "flights/2013-02": "flights/2013-02.parquet",
    "weather/static": "weather.parquet",
    "planes/static": "planes.parquet",
}


@pytest.fixture(scope="module")
def lineage_config(stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    """Its own model name and experiment, and its own snapshot store (a test tampers with it);
    two quick candidates, one with a randomized search, so determinism covers the search too."""
    tmp = tmp_path_factory.mktemp("lineage")
    training = stack_config.training.model_copy(
        update={
            "importance_repeats": 1,  # permutation importance is not what is tested here
            "candidates": [
                CandidateConfig(
                    name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"}
                ),
                CandidateConfig(
                    name="hist_gb",
                    estimator="hist_gradient_boosting",
                    encoding="ordinal",
                    params={"max_iter": 100, "early_stopping": True, "n_iter_no_change": 10},
                    search={
                        "learning_rate": Distribution(kind="loguniform", low=0.05, high=0.2),
                        "max_leaf_nodes": [15, 31],
                    },
                    n_iter=2,
                ),
            ],
        }
    )
    promotion_settings = stack_config.promotion.model_copy(
        update={
            "quality": QualityGateConfig(min_roc_auc=0.55, max_brier=0.3),
            "slices": SliceGateConfig(columns=[], min_rows=200),
            "operational": OperationalGateConfig(
                max_p95_latency_ms=10_000, min_rows_per_second=10, latency_calls=20, batch_rows=500
            ),
            "approval": ApprovalConfig(required=False),
        }
    )
    registry = stack_config.registry.model_copy(
        update={"model_name": "flight-delay-lineage-test", "experiment": "flight-delay-lineage-test"}
    )
    data = stack_config.data.model_copy(
        update={"snapshot_uri": str(tmp / "snapshots"), "quarantine_uri": str(tmp / "quarantine")}
    )
    serving = stack_config.serving.model_copy(update={"prediction_log_uri": str(tmp / "predictions")})
    return stack_config.model_copy(
        update={
            "training": training,
            "promotion": promotion_settings,
            "registry": registry,
            "data": data,
            "serving": serving,
        }
    )


@pytest.fixture(scope="module")
def config_file(lineage_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_config(lineage_config, tmp_path_factory.mktemp("lineage-cfg") / "mlops.yaml")


@pytest.fixture(scope="module")
def prefect_and_mlflow(stack, stack_config: ProjectConfig) -> Iterator[None]:
    with client_settings(stack_config):
        yield


@pytest.fixture(scope="module")
def trained(prefect_and_mlflow, sampled_landing: Store, config_file: Path) -> TrainingOutcome:
    return training_pipeline(TrainingRequest(start="2013-01", end="2013-02", config_path=str(config_file)))


@pytest.fixture(scope="module")
def promoted(trained: TrainingOutcome, config_file: Path) -> PromotionDecision:
    decision = promotion(PromotionRequest(config_path=str(config_file), eval_period="2013-03"))
    assert decision.promoted, decision.reasons
    return decision


@pytest.fixture(scope="module")
def served(promoted: PromotionDecision, lineage_config: ProjectConfig) -> int:
    """Rows the champion scored, written by the service's own log writer into one partition."""
    features = lineage_config.features
    store = open_store(lineage_config.serving.prediction_log_uri, lineage_config.data.s3)
    log = PredictionLog(store, log_schema(features.numeric, features.categorical), 1000, 60)
    rows = 7
    columns = {c: np.arange(rows, dtype="float64") for c in features.numeric}
    columns |= {c: np.array(["x"] * rows, dtype=object) for c in features.categorical}
    # Served after registration, as a real service would: dated today (UTC).
    stamp = pd.Timestamp.now(tz="UTC").tz_localize(None).to_datetime64()
    log.append(
        log_batch(
            log_schema(features.numeric, features.categorical),
            columns,
            [None] * rows,
            np.array([f"r{i}" for i in range(rows)]),
            np.array([stamp] * rows),
            lineage_config.registry.model_name,
            promoted.challenger_version,
            "champion",
            "none",
            True,
            np.full(rows, 0.3),
            np.zeros(rows, dtype="int8"),
        )
    )
    assert log.flush()
    return rows


def _lineage_json(config_file: Path, ref: str, tmp_path: Path) -> tuple[int, str, dict]:
    out = tmp_path / "lineage.json"
    result = CliRunner().invoke(app, ["--config", str(config_file), "lineage", ref, "--json", str(out)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output, json.loads(out.read_text()) if out.exists() else {}


def _suite_sha256(name: str) -> str:
    suite = json.loads((Path(__file__).resolve().parents[2] / "expectations" / f"{name}.json").read_text())
    return hashlib.sha256(json.dumps(suite, sort_keys=True).encode()).hexdigest()


def _artifacts(flow_run_id: str) -> dict[str, Artifact]:
    query = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC", "limit": 200}
    with get_client(sync_client=True) as client:
        found = Artifact.model_validate_list(client.request("POST", "/artifacts/filter", json=query).json())
    latest: dict[str, Artifact] = {}
    for artifact in found:
        latest.setdefault(artifact.key, artifact)
    return latest


def test_lineage_links_every_step_from_landing_files_to_served_partitions(
    trained: TrainingOutcome,
    promoted: PromotionDecision,
    served: int,
    sampled_landing: Store,
    lineage_config: ProjectConfig,
    config_file: Path,
    tmp_path: Path,
) -> None:
    name = lineage_config.registry.model_name
    code, output, chain = _lineage_json(config_file, f"{name}@champion", tmp_path)
    assert code == 0, output
    assert chain["version"] == trained.model_version and chain["model_name"] == name

    # landing files → snapshots: every recorded hash and size is that of the landing file
    inputs = {i["name"]: i for i in chain["inputs"]}
    assert set(inputs) == set(LANDING_KEYS)
    for input_name, key in LANDING_KEYS.items():
        landed = sampled_landing.read_bytes(key)
        assert inputs[input_name]["sha256"] == sha256_bytes(landed)
        assert inputs[input_name]["size"] == len(landed)
        assert inputs[input_name]["source_uri"] == sampled_landing.uri_for(key)
        assert inputs[input_name]["snapshot_status"] == "present, sha256 verified"
        assert Path(inputs[input_name]["snapshot_uri"]).read_bytes() == landed
    assert {i["context"] for i in chain["inputs"]} == {"training", "holdout", "dimension"}

    # validation: each suite by name and content hash, passed, with a link to its result
    suites = {(v["batch"].split("@")[0], v["suite"]): v for v in chain["validation"]}
    assert {s for _, s in suites} == {"flights_batch", "weather", "planes", "flights_training"}
    for (_, suite), link in suites.items():
        assert link["passed"] is True
        assert link["suite_sha256"] == _suite_sha256(suite)
        assert link["result_url"].startswith(lineage_config.stack.tracking_uri)

    # training run: code, config, seeds, packages
    training = chain["training"]
    assert training["config_hash"] == lineage_config.fingerprint
    assert training["git_commit"] not in ("", "not recorded")
    assert training["seed"] == str(lineage_config.training.seed)
    assert training["config_recorded"] is True
    assert training["packages"]["scikit-learn"] == installed_version("scikit-learn")
    assert training["metrics"]["holdout_roc_auc"] == trained.metrics["holdout_roc_auc"]
    assert training["prefect_run_url"] == trained.prefect_run_url

    # version → gate decision → champion period → served partition
    assert chain["registered"]["url"] == trained.model_version_url
    assert "champion" in chain["registered"]["aliases"]
    [decision] = chain["decisions"]
    assert decision["verdict"] == "promoted" and decision["eval_period"] == "2013-03"
    assert decision["run_url"] == promoted.mlflow_run_url
    [period] = chain["champion_periods"]
    assert period["end"] == "now" and promoted.mlflow_run_url in period["began_by"]
    today = datetime.now(UTC).date().isoformat()
    assert chain["served"] == [
        {"partition": f"date={today}", "rows": served, "served_rows": served, "arms": {"champion": served}}
    ]
    assert all(c["ok"] for c in chain["checks"]) and len(chain["checks"]) >= 2 + len(LANDING_KEYS)
    assert chain["gaps"] == []
    for heading in ("landing files → snapshots", "validation", "training run", "gate decisions", "champion"):
        assert heading in output

    # the same chain, as Markdown, on the training and the promotion runs; the version links to it
    key = lineage_artifact_key(name, trained.model_version)
    for run_url in (trained.prefect_run_url, promoted.prefect_run_url):
        artifact = _artifacts(run_url.rsplit("/", 1)[-1])[key]
        assert artifact.type == "markdown" and inputs["flights/2013-01"]["sha256"] in str(artifact.data)
    assert "promoted" in str(_artifacts(promoted.prefect_run_url.rsplit("/", 1)[-1])[key].data)
    version = MlflowClient(lineage_config.stack.tracking_uri).get_model_version(name, trained.model_version)
    assert f"{lineage_config.stack.ui_url}/artifacts/key/{key}" in version.description


def _task_states(flow_run_id: str) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC,
            limit=200,
        )
    return {run.name: run.state.name for run in runs}


def test_reproduce_rebuilds_identical_metrics_without_cache_or_new_version(
    trained: TrainingOutcome, lineage_config: ProjectConfig, config_file: Path
) -> None:
    client = MlflowClient(lineage_config.stack.tracking_uri)
    name = lineage_config.registry.model_name
    versions_before = {v.version for v in client.search_model_versions(f"name = '{name}'")}

    outcome = reproduce(
        ReproduceRequest(model=f"{name}/{trained.model_version}", config_path=str(config_file))
    )

    assert outcome.identical, outcome.differences
    assert outcome.config_source.startswith("recorded")
    assert {m.name for m in outcome.headline} == set(trained.metrics)
    for m in outcome.headline:
        assert m.reproduced == m.recorded == trained.metrics[m.name]  # to the last digit
    assert len(outcome.candidates) >= 2 * 9  # CV and holdout metrics of both candidates
    assert all(m.equal for m in outcome.candidates)
    assert outcome.predictions_max_abs_diff == 0.0
    assert outcome.selected_reproduced == outcome.selected_recorded == "hist_gb"
    # fitted again, not served from the cache that keys on the same fingerprint
    states = _task_states(outcome.prefect_run_url.rsplit("/", 1)[-1])
    assert states["train hist_gb"] == "Completed" and states["build training frame"] == "Completed"
    # nothing registered; the outcome is recorded on the version
    assert {v.version for v in client.search_model_versions(f"name = '{name}'")} == versions_before
    tags = client.get_model_version(name, trained.model_version).tags
    assert tags["reproduced"] == "identical"
    assert client.get_run(tags["reproduced.mlflow_run_id"]).data.tags["pipeline"] == "reproduce"


def test_reproduce_refuses_a_tampered_snapshot_and_names_it(
    trained: TrainingOutcome, lineage_config: ProjectConfig, config_file: Path, tmp_path: Path
) -> None:
    name = lineage_config.registry.model_name
    snapshots = Path(lineage_config.data.snapshot_uri)
    [target] = [
        p for p in snapshots.glob("flights/*.parquet") if _sha(p) == _landed_sha(lineage_config, "2013-01")
    ]
    original = target.read_bytes()
    tampered = bytearray(original)
    tampered[len(tampered) // 2] ^= 0xFF
    target.write_bytes(bytes(tampered))
    try:
        with pytest.raises(LandingError) as refused:
            reproduce(ReproduceRequest(model=f"{name}/{trained.model_version}", config_path=str(config_file)))
        assert str(target) in str(refused.value) and "modified" in str(refused.value)

        result = CliRunner().invoke(
            app, ["--config", str(config_file), "reproduce", f"{name}/{trained.model_version}"]
        )
        assert result.exit_code == 1 and str(target) in result.output.replace("\n", "")

        code, _, chain = _lineage_json(config_file, f"{name}/{trained.model_version}", tmp_path)
        assert code == 1  # a failed cross-check
        [bad] = [i for i in chain["inputs"] if i["name"] == "flights/2013-01"]
        assert bad["snapshot_status"].startswith("modified")
    finally:
        target.write_bytes(original)


def _sha(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def _landed_sha(config: ProjectConfig, period: str) -> str:
    landing = open_store(config.data.landing_uri, config.data.s3)
    return sha256_bytes(landing.read_bytes(f"flights/{period}.parquet"))


def test_an_unknown_reference_is_one_clear_line(
    trained: TrainingOutcome, lineage_config: ProjectConfig, config_file: Path
) -> None:
    name = lineage_config.registry.model_name
    result = CliRunner().invoke(app, ["--config", str(config_file), "lineage", f"{name}@no-such-alias"])
    assert result.exit_code == 1
    assert f"model {name!r} has no version with alias 'no-such-alias'" in result.output
    result = CliRunner().invoke(app, ["--config", str(config_file), "lineage", f"{name}:3"])
    assert result.exit_code == 1 and "use <model>/<version> or <model>@<alias>" in result.output


def test_reproduce_reports_each_difference_with_its_likely_cause(
    trained: TrainingOutcome, lineage_config: ProjectConfig, config_file: Path, tmp_path: Path
) -> None:
    """Records doctored as if trained elsewhere: another scikit-learn, another last digit."""
    client = MlflowClient(lineage_config.stack.tracking_uri)
    name = lineage_config.registry.model_name
    run_id = client.get_model_version(name, trained.model_version).run_id
    packages = json.loads(
        Path(client.download_artifacts(run_id, "environment/packages.json", str(tmp_path))).read_text()
    )
    original_packages = json.loads(json.dumps(packages))
    packages["packages"]["scikit-learn"] = "0.0.1"
    recorded = trained.metrics["holdout_brier"]
    doctored = float(np.nextafter(recorded, 1.0))  # the last digit
    client.log_dict(run_id, packages, "environment/packages.json")
    client.log_metric(run_id, "holdout_brier", doctored, step=1)
    try:
        result = CliRunner().invoke(
            app, ["--config", str(config_file), "reproduce", f"{name}/{trained.model_version}"]
        )
        assert result.exit_code == 5, result.output
        output = result.output.replace("\n", " ")
        assert "Downloading artifacts" not in output
        assert f"holdout_brier: recorded {doctored!r}, reproduced {recorded!r}" in output
        assert f"scikit-learn 0.0.1 → {installed_version('scikit-learn')}" in output
        assert client.get_model_version(name, trained.model_version).tags["reproduced"] == "different"
    finally:
        client.log_dict(run_id, original_packages, "environment/packages.json")
        client.log_metric(run_id, "holdout_brier", recorded, step=2)
