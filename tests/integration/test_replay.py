"""The replay on five sampled real months against a real Prefect API and MLflow server.

January-March bootstrap the champion. April drifts (spring temperatures) but the months
before it are the champion's own, so there is nothing new to train; May drifts again and a
version trained on January-April meets the promotion gates on May itself.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Artifact

from flows.replay import ReplayOutcome, ReplayRequest, bootstrap, replay, replay_config
from flows.stages import model_metric
from mlops.clients import client_settings
from mlops.config import ProjectConfig, save_config
from mlops.storage import Stores
from mlops.tracking import Tracker
from tasks.drift import RETRAIN_VERDICTS
from tests.integration.drift_setup import drift_config, write_config

pytestmark = pytest.mark.integration

MODEL = "flight-delay-replay-test"
MONTHS = ["2013-01", "2013-02", "2013-03", "2013-04", "2013-05"]


@pytest.fixture(scope="module")
def config(stack, stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    return drift_config(stack_config, tmp_path_factory.mktemp("replay"), MODEL, MONTHS)


@pytest.fixture(scope="module")
def prefect_and_mlflow(stack, config: ProjectConfig) -> Iterator[None]:
    with client_settings(config):
        yield


@pytest.fixture(scope="module")
def played(
    prefect_and_mlflow, config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory
) -> ReplayOutcome:
    path = write_config(config, tmp_path_factory.mktemp("replay-config"))
    return replay(ReplayRequest(config_path=str(path), start=MONTHS[0], end=MONTHS[-1]))


def test_the_timeline_holds_each_months_decision(played: ReplayOutcome) -> None:
    assert played.model_name == f"{MODEL}-replay" and played.notes == []
    assert played.bootstrap_periods == MONTHS[:3]
    bootstrap = played.bootstrap_version
    april, may = played.rows
    assert [april.period, may.period] == MONTHS[3:]

    # April against January-March: spring drifts, but the months before April are the
    # champion's own months, so the retraining finds the champion itself.
    assert april.champion_version == bootstrap
    assert april.verdict in RETRAIN_VERDICTS and "temp" in april.drifted_columns, april.reasons
    assert (april.retrained_version, april.decision, april.champion_after) == (
        bootstrap,
        "nothing new",
        bootstrap,
    )

    # May: a version trained on January-April is judged on May by the promotion gates.
    assert may.champion_version == bootstrap and may.verdict in RETRAIN_VERDICTS
    assert may.retrained_version not in (None, bootstrap)
    assert may.decision in {"promoted", "rejected"}
    assert may.champion_after == (may.retrained_version if may.decision == "promoted" else bootstrap)

    # The never-retrained curve is the bootstrap model: the champion in both months here.
    for row in (april, may):
        assert row.frozen_metric == row.champion_metric and 0.55 < row.champion_metric < 0.95


def test_a_bootstrap_below_the_margin_still_starts_the_replay(
    played: ReplayOutcome, config: ProjectConfig, tmp_path: Path
) -> None:
    """With a margin no candidate meets, the bootstrap still registers the best one on exactly
    its months, and says so. The margin is not part of the training fingerprint, so the
    second selection reuses the replay's fits and finds the version it registered."""
    replayed = replay_config(config)
    strict = replayed.model_copy(
        update={"training": replayed.training.model_copy(update={"min_gain_over_baseline": 0.5})}
    )
    first, notes = bootstrap(strict, str(save_config(strict, tmp_path / "mlops.yaml")), MONTHS[:3])
    assert (first.model_version, first.reused) == (played.bootstrap_version, True)
    assert len(notes) == 1 and "no candidate beats the baseline" in notes[0], notes
    assert "needed a gain of 0.5" in notes[0] and "2013-01..2013-03" in notes[0]
    assert (tmp_path / "bootstrap.yaml").exists()


def test_the_decisions_match_the_registry(played: ReplayOutcome, config: ProjectConfig) -> None:
    client = MlflowClient(config.stack.tracking_uri)
    may = played.rows[-1]
    version = client.get_model_version(played.model_name, may.retrained_version)
    assert version.tags["periods"] == "2013-01..2013-04"
    aliases = client.get_registered_model(played.model_name).aliases
    assert str(aliases["champion"]) == may.champion_after
    # The replay has its own registry names: the configured model was never touched.
    assert Tracker(config.stack.tracking_uri, config.registry.experiment).aliases(MODEL) == {}


def test_the_frozen_curve_is_scored_like_monitoring_scores(
    played: ReplayOutcome, config: ProjectConfig
) -> None:
    replayed = replay_config(config)
    tracker = Tracker(config.stack.tracking_uri, replayed.monitoring.experiment)
    model = tracker.load_model(played.model_name, played.bootstrap_version)

    @flow
    def score_april() -> float | None:  # the scorer ingests through tasks: it needs a flow
        return model_metric(
            replayed, Stores.from_config(replayed), model, played.bootstrap_version, "2013-04"
        )

    auc = score_april()
    assert auc == pytest.approx(played.rows[0].champion_metric)


def test_the_timeline_is_in_mlflow_and_prefect(played: ReplayOutcome, config: ProjectConfig) -> None:
    assert Path(played.timeline_png).read_bytes().startswith(b"\x89PNG")
    client = MlflowClient(config.stack.tracking_uri)
    run_id = played.mlflow_run_url.rsplit("/", 1)[-1]
    history = client.get_metric_history(run_id, "champion_roc_auc")
    assert [(m.step, m.value) for m in history] == [(i, r.champion_metric) for i, r in enumerate(played.rows)]
    files = {a.path for a in client.list_artifacts(run_id, "replay")}
    assert files == {"replay/timeline.png", "replay/timeline.json", "replay/timeline.csv"}

    flow_run_id = played.prefect_run_url.rsplit("/", 1)[-1]
    query = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 50}
    with get_client(sync_client=True) as prefect:
        found = Artifact.model_validate_list(prefect.request("POST", "/artifacts/filter", json=query).json())
    by_key = {a.key: a for a in found}
    table = json.loads(by_key["replay-timeline"].data)
    assert [row["period"] for row in table] == MONTHS[3:]
    assert [row["decision"] for row in table] == [r.decision for r in played.rows]
    assert played.mlflow_run_url in by_key["replay-summary"].data
