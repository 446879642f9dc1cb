"""The promotion gates against a real Prefect API and MLflow server: two versions trained on
different months of sampled real data compete on a month neither saw.

The versions are trained once for the module; each test arranges the aliases it starts
from, so the tests do not depend on their order.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from threading import Barrier
from typing import Any

import mlflow.sklearn
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow import MlflowClient
from prefect import tags
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import Artifact, FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run
from prefect.input import keyset_from_paused_state, read_flow_run_input
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from app.cli import app
from flows.probe import ModelProbe
from flows.promotion import PromotionDecision, PromotionRequest, promotion
from flows.training import TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import (
    ApprovalConfig,
    CandidateConfig,
    FairnessGateConfig,
    OnlineGateConfig,
    OperationalGateConfig,
    ProjectConfig,
    QualityGateConfig,
    SliceGateConfig,
    save_config,
)
from mlops.names import FAIRNESS_FILE
from mlops.prediction_log import write_partitions
from mlops.storage import Store, open_store
from serving.samples import feature_frame
from tasks.features import build_training_frame

pytestmark = pytest.mark.integration

EVAL_PERIOD = "2013-06"
WAIT_SECONDS = 240  # upper bound for a flow to reach a state; a hang fails instead of blocking
APPROVAL_TIMEOUT = 90  # a test that fails before answering leaves its paused run this long


@dataclass(frozen=True)
class Versions:
    early: str  # trained on 2013-01..03 (holdout 03)
    late: str  # trained on 2013-01..05 (holdout 05), registered last: the `challenger`


@pytest.fixture(scope="module")
def promo_config(stack_config: ProjectConfig) -> ProjectConfig:
    """The session config with its own model name (other modules register versions too), two
    quick candidates, and limits the 8% sample can meet (its slices are small). The operational limits are loose on
    purpose: a test must not pass or fail with the machine's speed."""
    training = stack_config.training.model_copy(
        update={
            "candidates": [
                CandidateConfig(
                    name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"}
                ),
                CandidateConfig(
                    name="hist_gb",
                    estimator="hist_gradient_boosting",
                    encoding="ordinal",
                    params={"max_iter": 200, "early_stopping": True, "n_iter_no_change": 15},
                ),
            ]
        }
    )
    promotion_settings = stack_config.promotion.model_copy(
        update={
            "quality": QualityGateConfig(min_roc_auc=0.6, max_brier=0.25),
            "slices": SliceGateConfig(columns=["origin", "carrier"], max_roc_auc_drop=0.05, min_rows=200),
            "fairness": FairnessGateConfig(
                groups=["origin"],
                min_rows=200,
                max_demographic_parity_difference=0.5,
                max_equalized_odds_difference=0.6,
                max_increase_over_champion=0.15,  # a sample's groups are small: their gaps move by chance
            ),
            "operational": OperationalGateConfig(
                max_p95_latency_ms=10_000, min_rows_per_second=10, latency_calls=50, batch_rows=2000
            ),
            "approval": ApprovalConfig(required=False, timeout_seconds=APPROVAL_TIMEOUT, poll_seconds=1),
        }
    )
    registry = stack_config.registry.model_copy(
        update={"model_name": "flight-delay-promotion-test", "experiment": "flight-delay-promotion-test"}
    )
    return stack_config.model_copy(
        update={"training": training, "promotion": promotion_settings, "registry": registry}
    )


def _config_file(config: ProjectConfig, folder: Path, **promotion_updates: Any) -> Path:
    settings = config.promotion.model_copy(update=promotion_updates)
    return save_config(config.model_copy(update={"promotion": settings}), folder / "mlops.yaml")


@pytest.fixture(scope="module")
def config_file(promo_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _config_file(promo_config, tmp_path_factory.mktemp("promotion"))


@pytest.fixture(scope="module")
def prefect_and_mlflow(stack, stack_config: ProjectConfig) -> Iterator[None]:
    with client_settings(stack_config):
        yield


@pytest.fixture(scope="module")
def registry(promo_config: ProjectConfig, stack) -> MlflowClient:
    return MlflowClient(promo_config.stack.tracking_uri)


@pytest.fixture(scope="module")
def versions(prefect_and_mlflow, sampled_landing: Store, config_file: Path) -> Versions:
    early = training_pipeline(TrainingRequest(start="2013-01", end="2013-03", config_path=str(config_file)))
    late = training_pipeline(TrainingRequest(start="2013-01", end="2013-05", config_path=str(config_file)))
    assert early.model_version != late.model_version
    return Versions(early.model_version, late.model_version)


def _arrange(registry: MlflowClient, config: ProjectConfig, **aliases: str | None) -> None:
    """Point (or clear) aliases before a test, as an earlier promotion would have left them."""
    name = config.registry.model_name
    current = registry.get_registered_model(name).aliases
    for alias, version in aliases.items():
        if version is not None:
            registry.set_registered_model_alias(name, alias, version)
        elif alias in current:
            registry.delete_registered_model_alias(name, alias)


def _aliases(registry: MlflowClient, config: ProjectConfig) -> dict[str, str]:
    return {k: str(v) for k, v in registry.get_registered_model(config.registry.model_name).aliases.items()}


def _promote(config_file: Path, **request: Any) -> PromotionDecision:
    return promotion(PromotionRequest(config_path=str(config_file), eval_period=EVAL_PERIOD, **request))


def _in_thread(
    pool: ThreadPoolExecutor, stack_config: ProjectConfig, tag: str, run: Callable[[], PromotionDecision]
) -> Future[PromotionDecision]:
    """Run a flow in a worker thread, tagged so the test can find its flow run."""

    def target() -> PromotionDecision:
        with client_settings(stack_config), tags(tag):  # settings live in context, not per process
            return run()

    return pool.submit(target)


def _flow_runs(tag: str, state: StateType | None = None) -> list[FlowRun]:
    flow_filter = FlowRunFilter(
        tags=FlowRunFilterTags(all_=[tag]),
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state])) if state else None,
    )
    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=flow_filter, sort=FlowRunSort.START_TIME_DESC, limit=50)


def _wait_until_paused(tag: str, running: Future[PromotionDecision]) -> FlowRun:
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        paused = _flow_runs(tag, StateType.PAUSED)
        if paused:
            return paused[0]
        if running.done():
            pytest.fail(f"the flow ended without pausing: {running.result()}")
        time.sleep(0.5)
    pytest.fail(f"no paused promotion run tagged {tag} within {WAIT_SECONDS} s")


def _approval_form(paused: FlowRun) -> str:
    """The description shown above the approval form, once the paused run has saved it (the
    run saves the form just after entering Paused: answering earlier could race it)."""
    assert paused.state is not None
    keyset = keyset_from_paused_state(paused.state)
    deadline = time.monotonic() + WAIT_SECONDS
    while time.monotonic() < deadline:
        if read_flow_run_input(keyset["schema"], paused.id) is not None:
            return read_flow_run_input(keyset["description"], paused.id)
        time.sleep(0.2)
    pytest.fail(f"paused run {paused.id} saved no approval form within {WAIT_SECONDS} s")


def _artifacts(flow_run_id: str) -> dict[str, Artifact]:
    """The latest artifact per key of one flow run."""
    # Sent as plain JSON: the client's read_artifacts sends null for the filters left out,
    # which this server refuses (422), and an empty task-run filter drops flow-level artifacts.
    query = {"artifacts": {"flow_run_id": {"any_": [flow_run_id]}}, "sort": "CREATED_DESC", "limit": 200}
    with get_client(sync_client=True) as client:
        found = Artifact.model_validate_list(client.request("POST", "/artifacts/filter", json=query).json())
    latest: dict[str, Artifact] = {}
    for artifact in found:
        latest.setdefault(artifact.key, artifact)
    return latest


def _run_id(url: str) -> str:
    return url.rsplit("/", 1)[-1]


def _decision_json(registry: MlflowClient, run_id: str, tmp_path: Path) -> dict[str, Any]:
    path = registry.download_artifacts(run_id, "promotion/decision.json", str(tmp_path))
    return json.loads(Path(path).read_text())


@pytest.fixture(scope="module")
def first_promotion(
    versions: Versions, registry: MlflowClient, promo_config: ProjectConfig, config_file: Path
) -> PromotionDecision:
    """The early version against no champion at all."""
    _arrange(registry, promo_config, champion=None, previous=None)
    return _promote(config_file, challenger_version=versions.early)


@pytest.fixture(scope="module")
def second_promotion(
    first_promotion: PromotionDecision, versions: Versions, config_file: Path
) -> PromotionDecision:
    """The late version (the `challenger` alias, no version given) against the early one."""
    assert first_promotion.promoted, first_promotion.reasons
    return _promote(config_file)


def test_first_version_is_promoted_with_the_champion_gates_skipped(
    first_promotion: PromotionDecision, versions: Versions
) -> None:
    d = first_promotion
    assert d.promoted, d.reasons
    assert (d.champion_version, d.previous_version, d.compared_with) == (versions.early, None, None)
    by_name = {g.name: g for g in d.gates}
    for name in ("champion.roc_auc_gain", "champion.ci_low", "slices.origin", "slices.carrier"):
        assert by_name[name].skipped and "no champion" in by_name[name].detail
    assert any("skipped: no champion" in r for r in d.reasons)
    evaluated = [g for g in d.gates if not g.skipped]
    assert {g.name for g in evaluated} >= {"data.validation", "quality.roc_auc", "operational.loads"}
    assert all(g.passed for g in evaluated)


def test_better_challenger_becomes_champion_and_the_decision_is_recorded(
    second_promotion: PromotionDecision,
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    sampled_landing: Store,
    tmp_path: Path,
) -> None:
    d = second_promotion
    assert d.promoted, d.reasons
    assert d.challenger_version == versions.late and d.compared_with == versions.early
    assert (d.champion_version, d.previous_version) == (versions.late, versions.early)
    assert (
        _aliases(registry, promo_config).items()
        >= {"champion": versions.late, "previous": versions.early}.items()
    )
    gates = {g.name: g for g in d.gates}
    assert gates["champion.ci_low"].passed and gates["champion.ci_low"].value > 0
    assert (
        not gates["slices.carrier"].skipped and "skipped" in gates["slices.carrier"].detail
    )  # small airlines

    # The gate values are those of the registered models on the month neither saw.
    name = promo_config.registry.model_name
    frame = build_training_frame(
        {
            EVAL_PERIOD: pd.read_parquet(
                io.BytesIO(sampled_landing.read_bytes(f"flights/{EVAL_PERIOD}.parquet"))
            )
        },
        {
            t: pd.read_parquet(io.BytesIO(sampled_landing.read_bytes(f"{t}.parquet")))
            for t in ("weather", "planes")
        },
        promo_config,
        "test",
    ).frame
    X, y = frame[promo_config.features.columns], frame[promo_config.target.label].to_numpy()
    auc = {
        v: roc_auc_score(y, mlflow.sklearn.load_model(f"models:/{name}/{v}").predict_proba(X)[:, 1])
        for v in (versions.early, versions.late)
    }
    assert d.eval_rows == len(y)
    assert gates["quality.roc_auc"].value == pytest.approx(auc[versions.late])
    assert gates["champion.roc_auc_gain"].value == pytest.approx(auc[versions.late] - auc[versions.early])

    # MLflow: the decision as a few version tags, and as a run with the JSON record.
    late = registry.get_model_version(name, versions.late)
    assert late.tags["promotion"] == "promoted"
    assert late.tags["promotion.compared_with"] == versions.early
    assert late.tags["promotion.eval_period"] == EVAL_PERIOD
    assert late.tags["promotion.mlflow_run_id"] == d.mlflow_run_id
    assert not any(k.startswith("promotion.gate.") for k in late.tags)  # those are in the record
    early = registry.get_model_version(name, versions.early)
    assert early.tags["promotion.replaced_by"] == versions.late
    run = registry.get_run(d.mlflow_run_id)
    assert run.data.tags["pipeline"] == "promotion"
    assert registry.get_experiment(run.info.experiment_id).name == promo_config.registry.experiment
    record = _decision_json(registry, d.mlflow_run_id, tmp_path)
    assert record["promoted"] is True and record["champion_version"] == versions.late
    assert {g["name"]: g for g in record["gates"]}["champion.ci_low"]["passed"] is True
    assert [g["name"] for g in record["gates"]] == [g.name for g in d.gates]
    assert record["bootstrap"]["ci_low"] == pytest.approx(gates["champion.ci_low"].value)
    assert {row["column"] for row in record["slices"]} == {"origin", "carrier"}
    # Fairlearn's by-group table of both models, and the fairness gates it fed.
    for figure in ("demographic_parity_difference", "equalized_odds_difference"):
        assert gates[f"fairness.origin.{figure}"].status == "passed"
        assert not gates[f"fairness.origin.{figure}.vs_champion"].skipped
    by_group = json.loads(
        Path(registry.download_artifacts(d.mlflow_run_id, FAIRNESS_FILE, str(tmp_path))).read_text()
    )
    assert {(row["model"], row["group"]) for row in by_group} == {
        (model, origin)
        for model in ("challenger", f"champion v{versions.early}")
        for origin in ("EWR", "JFK", "LGA")
    }
    assert sum(row["rows"] for row in by_group if row["model"] == "challenger") == len(y)
    rates = {row["group"]: row["selection_rate"] for row in by_group if row["model"] == "challenger"}
    assert gates["fairness.origin.demographic_parity_difference"].value == pytest.approx(
        max(rates.values()) - min(rates.values())
    )
    assert record["fairness"] == by_group

    # Prefect: the gate table and the decision in markdown on the flow run.
    artifacts = _artifacts(_run_id(d.prefect_run_url))
    assert artifacts["promotion-gates"].type == "table"
    assert "champion.ci_low" in str(artifacts["promotion-gates"].data)
    assert "PROMOTED" in str(artifacts["promotion-decision"].data)
    assert artifacts["promotion-fairness"].type == "table" and "selection_rate" in str(
        artifacts["promotion-fairness"].data
    )


def test_worse_challenger_is_rejected_with_reasons_via_the_cli(
    second_promotion: PromotionDecision,
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    tmp_path: Path,
) -> None:
    """The early version against the late champion, with an artifact limit no model meets."""
    _arrange(registry, promo_config, champion=versions.late, previous=versions.early)
    tight = _config_file(
        promo_config,
        tmp_path,
        operational=promo_config.promotion.operational.model_copy(update={"max_artifact_mb": 0.001}),
    )
    result = CliRunner().invoke(
        app,
        [
            "--config",
            str(tight),
            "promote",
            "--eval-period",
            EVAL_PERIOD,
            "--challenger-version",
            versions.early,
        ],
    )
    assert result.exit_code == 2, result.output
    assert "rejected" in result.output
    assert _aliases(registry, promo_config) == {
        "champion": versions.late,
        "previous": versions.early,
        "challenger": versions.late,
    }
    tags = registry.get_model_version(promo_config.registry.model_name, versions.early).tags
    assert tags["promotion"] == "rejected"
    assert tags["promotion.compared_with"] == versions.late
    record = _decision_json(registry, tags["promotion.mlflow_run_id"], tmp_path)
    assert "champion.roc_auc_gain failed" in "; ".join(record["reasons"])
    assert "operational.artifact_mb failed" in "; ".join(record["reasons"])
    assert {g["name"]: g for g in record["gates"]}["operational.artifact_mb"]["passed"] is False


def test_approval_pauses_the_run_and_records_the_reviewer(
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    stack_config: ProjectConfig,
    config_file: Path,
    tmp_path: Path,
) -> None:
    _arrange(registry, promo_config, champion=versions.early, previous=None)
    tag = f"approval-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(1) as pool:
        running = _in_thread(
            pool,
            stack_config,
            tag,
            lambda: _promote(config_file, challenger_version=versions.late, require_approval=True),
        )
        paused = _wait_until_paused(tag, running)
        # The reviewer sees the gate report, on the form and as a table, before answering.
        form = _approval_form(paused)
        assert f"Promote {promo_config.registry.model_name} v{versions.late}" in form
        assert f"champion v{versions.early}" in form and "| champion.ci_low | passed |" in form
        report = _artifacts(str(paused.id))["promotion-gates"]
        assert "waiting for approval" in report.description and "champion.ci_low" in str(report.data)
        assert _aliases(registry, promo_config)["champion"] == versions.early  # nothing moved yet
        resume_flow_run(paused.id, run_input={"approve": True, "reviewer": "alice", "comment": "slices fine"})
        d = running.result(timeout=WAIT_SECONDS)
    assert d.promoted, d.reasons
    assert d.approved_by == "alice" and d.approval_comment == "slices fine"
    assert {g.name: g for g in d.gates}["approval"].detail == "approved by alice: slices fine"
    assert (d.champion_version, d.previous_version) == (versions.late, versions.early)
    tags = registry.get_model_version(promo_config.registry.model_name, versions.late).tags
    approval = _decision_json(registry, tags["promotion.mlflow_run_id"], tmp_path)["approval"]
    assert (approval["reviewer"], approval["approve"]) == ("alice", True)
    assert approval["comment"] == "slices fine"


def test_a_champion_moved_during_approval_is_not_overwritten(
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    stack_config: ProjectConfig,
    config_file: Path,
) -> None:
    """Compare-and-set: the run compared against the early champion; if someone moves the
    alias while the reviewer reads, the approval must not promote over the new state."""
    _arrange(registry, promo_config, champion=versions.early, previous=None)
    tag = f"cas-{uuid.uuid4().hex[:8]}"
    with ThreadPoolExecutor(1) as pool:
        running = _in_thread(
            pool,
            stack_config,
            tag,
            lambda: _promote(config_file, challenger_version=versions.late, require_approval=True),
        )
        paused = _wait_until_paused(tag, running)
        _approval_form(paused)
        _arrange(registry, promo_config, champion=None)  # e.g. an operator pulled the champion
        resume_flow_run(paused.id, run_input={"approve": True, "reviewer": "bob"})
        d = running.result(timeout=WAIT_SECONDS)
    assert not d.promoted
    assert any(f"champion moved from v{versions.early} to none" in r for r in d.reasons), d.reasons
    assert "champion" not in _aliases(registry, promo_config)


def test_no_answer_before_the_timeout_rejects_and_the_run_completes(
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    prefect_and_mlflow,
    tmp_path: Path,
) -> None:
    _arrange(registry, promo_config, champion=versions.early, previous=None)
    short = _config_file(
        promo_config, tmp_path, approval=ApprovalConfig(required=True, timeout_seconds=2, poll_seconds=1)
    )
    d = _promote(short, challenger_version=versions.late)  # approval required by the config
    assert not d.promoted
    assert d.reasons == ["approval failed: no answer within 2 s"]
    assert _aliases(registry, promo_config)["champion"] == versions.early
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(_run_id(d.prefect_run_url))
    assert run.state is not None and run.state.is_completed()
    tags = registry.get_model_version(promo_config.registry.model_name, versions.late).tags
    assert tags["promotion"] == "rejected"
    record = _decision_json(registry, tags["promotion.mlflow_run_id"], tmp_path)
    approval = {g["name"]: g for g in record["gates"]}["approval"]
    assert not approval["passed"] and not approval["skipped"]


def test_concurrent_promotions_move_the_champion_once(
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    stack_config: ProjectConfig,
    config_file: Path,
) -> None:
    _arrange(registry, promo_config, champion=versions.early, previous=None)
    tag = f"race-{uuid.uuid4().hex[:8]}"
    start = Barrier(2)

    def contender() -> PromotionDecision:
        start.wait()
        return _promote(config_file, challenger_version=versions.late)

    with ThreadPoolExecutor(2) as pool:
        futures = [_in_thread(pool, stack_config, tag, contender) for _ in range(2)]
        decisions = [f.result(timeout=2 * WAIT_SECONDS) for f in futures]

    assert sorted(d.promoted for d in decisions) == [False, True]
    loser = next(d for d in decisions if not d.promoted)
    assert loser.reasons == [f"v{versions.late} is already the champion"]
    # Had both moved the alias, `previous` would name the late version itself.
    assert (
        _aliases(registry, promo_config).items()
        >= {"champion": versions.late, "previous": versions.early}.items()
    )
    # Both decisions are on record in MLflow, one run each.
    flow_run_ids = {_run_id(d.prefect_run_url) for d in decisions}
    assert {str(r.id) for r in _flow_runs(tag)} == flow_run_ids
    experiment = registry.get_experiment_by_name(promo_config.registry.experiment)
    runs = registry.search_runs(
        [experiment.experiment_id],
        filter_string="tags.pipeline = 'promotion'",
        max_results=200,
    )
    recorded = {r.data.tags["prefect_flow_run_id"]: r.data.tags["promotion"] for r in runs}
    assert sorted(recorded[i] for i in flow_run_ids) == ["promoted", "rejected"]
    with get_client(sync_client=True) as client:
        limit = client.read_global_concurrency_limit_by_name(f"promotion-{promo_config.registry.model_name}")
    assert limit.limit == 1 and limit.active


def test_rollback_restores_the_previous_champion_and_records_why(
    second_promotion: PromotionDecision,
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    config_file: Path,
) -> None:
    _arrange(registry, promo_config, champion=versions.late, previous=versions.early)
    runner = CliRunner()
    result = runner.invoke(
        app, ["--config", str(config_file), "rollback", "--reason", "late-arrival spike at JFK"]
    )
    assert result.exit_code == 0, result.output
    aliases = _aliases(registry, promo_config)
    assert aliases["champion"] == versions.early and "previous" not in aliases
    name = promo_config.registry.model_name
    rolled_back = registry.get_model_version(name, versions.late).tags
    restored = registry.get_model_version(name, versions.early).tags
    assert rolled_back["promotion"] == "rolled_back"
    assert rolled_back["rollback.reason"] == restored["rollback.reason"] == "late-arrival spike at JFK"
    assert restored["rollback.restored_from"] == versions.late
    run = registry.get_run(rolled_back["rollback.mlflow_run_id"])
    assert run.data.params["reason"] == "late-arrival spike at JFK"
    assert (run.data.params["from_version"], run.data.params["to_version"]) == (versions.late, versions.early)

    again = runner.invoke(app, ["--config", str(config_file), "rollback", "--reason", "once more"])
    assert again.exit_code == 1
    assert "no version with alias 'previous'" in again.output
    assert _aliases(registry, promo_config)["champion"] == versions.early


def test_a_model_that_cannot_load_fails_the_probe_with_the_cause(
    versions: Versions, promo_config: ProjectConfig
) -> None:
    probe = ModelProbe(
        f"models:/{promo_config.registry.model_name}/999",
        promo_config.promotion.operational,
        promo_config.stack.tracking_uri,
    )
    result = probe.measure(pd.DataFrame({"x": np.arange(3.0)}))
    assert not result.loaded
    assert "did not load in a fresh process" in result.error and "999" in result.error
    assert probe.process.returncode not in (None, 0)


# -- gate 4c: evidence from served traffic ---------------------------------------------------


def _shadow_log(config: ProjectConfig, landing: Store, champion: str, challenger: str, rows: int) -> None:
    """`rows` of June's records as shadow mode logs them today: the champion's answer served,
    the challenger's scored beside it, each with the record's key."""
    frame = feature_frame(config, landing, EVAL_PERIOD).head(rows)
    name = config.registry.model_name
    parts = []
    batch = uuid.uuid4().hex[:8]  # request ids are unique across calls, as the service's are
    for arm, version, served in (("champion", champion, True), ("challenger", challenger, False)):
        model = mlflow.sklearn.load_model(f"models:/{name}/{version}")
        parts.append(
            frame.assign(
                request_id=[f"{batch}-{i}" for i in range(len(frame))],
                timestamp=pd.Timestamp.now(tz="UTC"),
                model_name=name,
                model_version=version,
                arm=arm,
                mode="shadow",
                served=served,
                score=model.predict_proba(frame[config.features.columns])[:, 1],
            )
        )
    store = open_store(config.store_uri(config.serving.prediction_log_uri), config.data.s3)
    write_partitions(store, pa.Table.from_pandas(pd.concat(parts, ignore_index=True), preserve_index=False))


def test_the_online_gate_rejects_on_too_few_live_rows_and_passes_with_enough(
    versions: Versions,
    registry: MlflowClient,
    promo_config: ProjectConfig,
    sampled_landing: Store,
    tmp_path: Path,
) -> None:
    """The late version shadows the early champion. With 100 labelled live rows the gate
    (min 500) rejects it; once 2,000 requests have been labelled, the paired CI of its live
    gain decides, and lands in the decision record."""
    serving = promo_config.serving.model_copy(update={"prediction_log_uri": str(tmp_path / "predictions")})
    config = promo_config.model_copy(update={"serving": serving})
    online = OnlineGateConfig(min_rows=500, bootstrap_resamples=500)
    config_file = _config_file(config, tmp_path, online=online)

    _arrange(registry, config, champion=versions.early)
    _shadow_log(config, sampled_landing, versions.early, versions.late, rows=100)
    few = _promote(config_file, challenger_version=versions.late)
    gates = {g.name: g for g in few.gates}
    assert not few.promoted and gates["online.rows"].status == "failed"
    assert any("online.rows failed" in r for r in few.reasons)
    assert "gain_ci_low" not in str(list(gates))

    _arrange(registry, config, champion=versions.early)
    _shadow_log(config, sampled_landing, versions.early, versions.late, rows=2000)
    enough = _promote(config_file, challenger_version=versions.late)
    gates = {g.name: g for g in enough.gates}
    live, offline = gates["online.gain_ci_low"], gates["champion.ci_low"]
    assert gates["online.rows"].passed and gates["online.rows"].value >= 500
    assert "paired (shadow)" in live.detail
    # June's labelled requests are June's rows: the live gain says what the offline one says.
    assert (live.value > 0) == (offline.value > 0) and live.passed == (live.value > 0)
    record = _decision_json(registry, enough.mlflow_run_id, tmp_path)
    assert record["online"]["design"] == "paired (shadow)"
    assert record["online"]["challenger_rows"] == gates["online.rows"].value
    _arrange(registry, config, champion=versions.early)
