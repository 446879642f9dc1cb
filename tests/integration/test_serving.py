"""The prediction service over real HTTP, serving versions the real training flow registered
in a real MLflow registry: answers, refusals, hot swap under load, shadow and canary logs.

The module trains two versions of a model of its own (other modules move the aliases of
the main model): a random forest on 2013-01..06 and a logistic regression on 2013-01..05
(the candidate lists are trimmed to keep the module fast; both are real flow runs).
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from typer.testing import CliRunner

from app.cli import app as cli
from flows.ground_truth import GroundTruthRequest, ground_truth
from flows.rollout import BREACHED_EVENT, RolloutRequest, rollout
from flows.training import TrainingRequest, training_pipeline
from mlops.clients import client_settings
from mlops.config import (
    CandidateConfig,
    ProjectConfig,
    RolloutConfig,
    ServingConfig,
    load_config,
    save_config,
)
from mlops.errors import RolloutError
from mlops.prediction_log import read_prediction_log
from mlops.rollout import ROLLOUT_TAG, RolloutState
from mlops.storage import Store, open_store, sha256_bytes
from serving.app import create_app
from serving.routing import RoutingPlan
from serving.samples import feature_frame, landed_frame, to_arrow_stream, to_dataframe_split, to_records
from tasks.compare import compare_logged_traffic
from tests.conftest import find_events
from tests.ports import free_port

pytestmark = pytest.mark.integration

MODEL = "flight-delay-serving"
BASELINE = CandidateConfig(name="majority", estimator="dummy", baseline=True, params={"strategy": "prior"})
FOREST = CandidateConfig(
    name="random_forest",
    estimator="random_forest",
    encoding="ordinal",
    params={"n_estimators": 40, "max_depth": 12, "min_samples_leaf": 20, "max_samples": 0.3, "n_jobs": 1},
)
LOGISTIC = CandidateConfig(name="logistic", estimator="logistic_regression", params={"max_iter": 300})


@pytest.fixture(scope="module")
def config(stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    tmp = tmp_path_factory.mktemp("serving")
    registry = stack_config.registry.model_copy(update={"model_name": MODEL})
    serving = ServingConfig(
        prediction_log_uri=str(tmp / "predictions"),
        poll_seconds=0.5,
        log_flush_seconds=0.5,
        max_records=3000,
        max_body_bytes=2_000_000,
    )
    return stack_config.model_copy(update={"registry": registry, "serving": serving})


@pytest.fixture(scope="module")
def versions(stack, sampled_landing: Store, config: ProjectConfig, tmp_path_factory) -> dict[str, str]:
    """Two versions registered by the training flow: {"forest": v, "logistic": v}."""
    tmp = tmp_path_factory.mktemp("serving-configs")
    found = {}
    for name, candidate, end in (("forest", FOREST, "2013-06"), ("logistic", LOGISTIC, "2013-05")):
        training = config.training.model_copy(update={"candidates": [BASELINE, candidate]})
        path = save_config(config.model_copy(update={"training": training}), tmp / f"{name}.yaml")
        with client_settings(config):
            outcome = training_pipeline(TrainingRequest(start="2013-01", end=end, config_path=str(path)))
        found[name] = outcome.model_version
    assert found["forest"] != found["logistic"]
    return found


@pytest.fixture(scope="module")
def registry(config: ProjectConfig, versions: dict[str, str]) -> MlflowClient:
    return MlflowClient(config.stack.tracking_uri)


def set_aliases(client: MlflowClient, **aliases: str | None) -> None:
    for alias, version in aliases.items():
        if version is None:
            with contextlib.suppress(MlflowException):  # not set: nothing to delete
                client.delete_registered_model_alias(MODEL, alias)
        else:
            client.set_registered_model_alias(MODEL, alias, version)


@pytest.fixture(scope="module")
def june(config: ProjectConfig, sampled_landing: Store) -> pd.DataFrame:
    """June's flights as the service's clients see them: features and a key."""
    return feature_frame(config, sampled_landing, "2013-06")


@contextmanager
def running_service(config: ProjectConfig, **serving: Any) -> Iterator[str]:
    """The app under uvicorn on a free port (or `port=`), in a thread; yields its base URL."""
    port = serving.setdefault("port", free_port())
    updated = config.model_copy(update={"serving": config.serving.model_copy(update=serving)})
    server = uvicorn.Server(
        uvicorn.Config(create_app(updated), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 180
    while not server.started:
        assert thread.is_alive(), "the service failed to start (see the log above)"
        assert time.monotonic() < deadline, "the service did not start within 180 s"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(60)


def own_scores(config: ProjectConfig, version: str, rows: pd.DataFrame) -> np.ndarray:
    """The registered model's own predict_proba, loaded the documented MLflow way."""
    import mlflow.sklearn

    with client_settings(config):
        model = mlflow.sklearn.load_model(f"models:/{MODEL}/{version}")
    features = rows[config.features.columns]
    return model.predict_proba(features)[:, list(model.classes_).index(1)]


def post(client: httpx.Client, url: str, payload: Any, **kwargs: Any) -> httpx.Response:
    return client.post(f"{url}/predict", json=payload, **kwargs)


def wait_for(condition, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def as_json(payload: Any) -> bytes:
    return json.dumps(payload).encode()


# name -> (body from a good record, status, what the error says); the service allows 3000 records
# and 2,000,000 bytes.
BAD_BODIES: dict[str, tuple[Callable[[dict], bytes], int, str]] = {
    "missing field": (
        lambda r: as_json({"records": [{k: v for k, v in r.items() if k != "temp"}]}),
        422,
        "records.0.temp: Field required",
    ),
    "wrong type": (lambda r: as_json([{**r, "carrier": 7}]), 422, "carrier: Input should be a valid string"),
    "string for a number": (
        lambda r: as_json([{**r, "distance": "1400"}]),
        422,
        "distance: Input should be a valid number",
    ),
    "extra field": (
        lambda r: as_json([{**r, "tailnum": "N1"}]),
        422,
        "tailnum: Extra inputs are not permitted",
    ),
    "NaN": (lambda r: as_json([{**r, "temp": 1.5}]).replace(b"1.5", b"NaN"), 422, "finite number"),
    "infinity": (lambda r: as_json([{**r, "temp": 1.5}]).replace(b"1.5", b"Infinity"), 422, "finite number"),
    "empty list": (lambda r: as_json({"records": []}), 422, "at least one"),
    # Valid JSON and schema, but beyond the float32 a forest computes in.
    "number too large for the model": (lambda r: as_json([{**r, "distance": 1e300}]), 422, "cannot score"),
    "malformed JSON": (lambda r: b'{"records": [{"month": 6.0,', 400, "not valid JSON"),
    "too many records": (lambda r: as_json([r] * 3001), 413, "serving.max_records"),
    "too many bytes": (lambda r: b'{"records": [' + b" " * 2_000_001 + b"]}", 413, "serving.max_body_bytes"),
}


# -- one service, champion only --------------------------------------------------------------


class TestChampionService:
    @pytest.fixture(scope="class")
    def url(self, config: ProjectConfig, registry: MlflowClient, versions: dict[str, str]) -> Iterator[str]:
        set_aliases(registry, champion=versions["forest"], challenger=versions["logistic"])
        with running_service(config) as url:
            yield url

    def test_health_ready_model_and_openapi(self, url: str, config: ProjectConfig, versions) -> None:
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{url}/health").json() == {"status": "ok"}
            ready = client.get(f"{url}/ready")
            assert ready.status_code == 200
            assert ready.json()["model_version"] == versions["forest"] and ready.json()["alias"] == "champion"
            model = client.get(f"{url}/model").json()
            assert model["name"] == MODEL and model["version"] == versions["forest"]
            assert model["metrics"]["holdout_roc_auc"] > 0.6  # from the version's training run
            assert model["models"]["challenger"]["version"] == versions["logistic"]
            # The forest scores through the compiled path; the one-hot logistic through its pipeline.
            assert model["models"]["champion"]["scorer"] == "compiled fast path"
            assert model["models"]["challenger"]["scorer"] == "pipeline"
            assert model["mode"] == "none"
            spec = client.get(f"{url}/openapi.json").json()
        body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["anyOf"]
        record = spec["components"]["schemas"]["Record"]
        assert set(record["required"]) == set(config.features.columns)
        assert "PredictResponse" in spec["components"]["schemas"]

    def test_predictions_equal_the_registered_models_own(
        self, url: str, config: ProjectConfig, versions: dict[str, str], june: pd.DataFrame
    ) -> None:
        rows = june.sample(n=1500, random_state=3)
        # Missing values of every kind are in the sample: numeric and categorical.
        assert rows["wind_gust"].isna().any() and rows["manufacturer"].isna().any()
        with httpx.Client(timeout=60) as client:
            batch = post(client, url, {"records": to_records(rows)})
            single = [post(client, url, [record]) for record in to_records(rows.head(20))]
        assert batch.status_code == 200, batch.text[:500]
        answer = batch.json()
        assert answer["model_name"] == MODEL and answer["request_id"]
        served = np.array([p["probability"] for p in answer["predictions"]])
        expected = own_scores(config, versions["forest"], rows)
        np.testing.assert_array_equal(served, expected)  # the same model, the same rows: the same floats
        labels = [p["label"] for p in answer["predictions"]]
        assert labels == (expected >= config.training.threshold).astype(int).tolist()
        assert {p["model_version"] for p in answer["predictions"]} == {versions["forest"]}
        assert [r.json()["predictions"][0]["probability"] for r in single] == expected[:20].tolist()

    def test_the_columnar_forms_answer_as_the_records_form(
        self, url: str, config: ProjectConfig, versions: dict[str, str], june: pd.DataFrame
    ) -> None:
        """MLflow's dataframe_split JSON and an Arrow IPC stream of the same rows get the same
        answers, float for float, as the records form; a bad column is a 422 naming it."""
        rows = june.sample(n=800, random_state=5)
        records = to_records(rows)
        arrow = {"content-type": "application/vnd.apache.arrow.stream"}
        with httpx.Client(timeout=60) as client:
            answers = {
                "records": post(client, url, {"records": records}),
                "dataframe_split": post(client, url, to_dataframe_split(records)),
                "arrow": client.post(f"{url}/predict", content=to_arrow_stream(records), headers=arrow),
            }
            wrong = to_arrow_stream([{**r, "carrier": 7} for r in records])
            refused = client.post(f"{url}/predict", content=wrong, headers=arrow)
            spec = client.get(f"{url}/openapi.json").json()
        scores = {}
        for form, answer in answers.items():
            assert answer.status_code == 200, (form, answer.text[:300])
            scores[form] = [
                (p["probability"], p["label"], p["model_version"]) for p in answer.json()["predictions"]
            ]
        assert scores["dataframe_split"] == scores["records"] and scores["arrow"] == scores["records"]
        assert [p for p, _, _ in scores["records"]] == own_scores(config, versions["forest"], rows).tolist()
        assert refused.status_code == 422 and "carrier" in refused.json()["error"]
        content = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
        assert set(content) == {"application/json", "application/vnd.apache.arrow.stream"}
        assert "DataframeSplitRequest" in spec["components"]["schemas"]

    @pytest.mark.parametrize("name", list(BAD_BODIES))
    def test_bad_input_is_a_4xx_naming_the_problem(self, url: str, june: pd.DataFrame, name: str) -> None:
        record = to_records(june.head(1))[0]
        make_body, status, says = BAD_BODIES[name]
        with httpx.Client(timeout=60) as client:
            response = client.post(
                f"{url}/predict", content=make_body(record), headers={"content-type": "application/json"}
            )
            assert response.status_code == status, response.text[:500]
            assert says in response.json()["error"]
            # The service is unharmed: the next good request is answered.
            assert post(client, url, [record]).status_code == 200

    def test_a_request_the_model_refuses_does_not_fail_those_batched_with_it(
        self, url: str, june: pd.DataFrame
    ) -> None:
        records = to_records(june.head(24))
        bodies = [[{**r, "distance": 1e300}] if i % 4 == 0 else [r] for i, r in enumerate(records)]
        statuses: list[int] = [0] * len(bodies)

        def send(i: int) -> None:
            with httpx.Client(timeout=60) as client:
                statuses[i] = post(client, url, bodies[i]).status_code

        threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert statuses == [422 if i % 4 == 0 else 200 for i in range(len(bodies))]

    def test_unseen_categories_and_all_missing_values_are_scored(self, url: str, june: pd.DataFrame) -> None:
        record = to_records(june.head(1))[0]
        unseen = {**record, "carrier": "ZZ", "dest": "Atlantis", "manufacturer": "ACME"}
        empty = {name: None for name in record}
        with httpx.Client(timeout=30) as client:
            response = post(client, url, [unseen, empty])
        assert response.status_code == 200, response.text
        assert all(0 <= p["probability"] <= 1 for p in response.json()["predictions"])


# -- aliases moving under a running service ----------------------------------------------------


def test_without_a_champion_the_challenger_answers_and_says_so(
    config: ProjectConfig, registry: MlflowClient, versions: dict[str, str], june: pd.DataFrame
) -> None:
    set_aliases(registry, champion=None, challenger=versions["logistic"])
    with running_service(config) as url, httpx.Client(timeout=30) as client:
        ready = client.get(f"{url}/ready").json()
        assert ready["alias"] == "challenger" and "no champion" in ready["note"]
        assert "no champion" in client.get(f"{url}/model").json()["note"]
        answer = post(client, url, to_records(june.head(3))).json()
    assert {(p["arm"], p["model_version"]) for p in answer["predictions"]} == {
        ("challenger", versions["logistic"])
    }


def test_no_model_at_all_is_not_ready(
    config: ProjectConfig, registry: MlflowClient, june: pd.DataFrame
) -> None:
    set_aliases(registry, champion=None, challenger=None)
    with running_service(config) as url, httpx.Client(timeout=30) as client:
        assert client.get(f"{url}/health").status_code == 200
        assert client.get(f"{url}/ready").status_code == 503
        assert post(client, url, to_records(june.head(1))).status_code == 503


def test_hot_swap_under_load_drops_no_request(
    config: ProjectConfig, registry: MlflowClient, versions: dict[str, str], june: pd.DataFrame
) -> None:
    old, new = versions["forest"], versions["logistic"]
    set_aliases(registry, champion=old, challenger=None)
    records = to_records(june.head(200))
    results: list[list[tuple[int, str | None]]] = [[] for _ in range(4)]
    failures: list[str] = []
    stop = threading.Event()

    def client_loop(slot: int, url: str) -> None:
        with httpx.Client(timeout=30) as client:
            i = slot
            while not stop.is_set():
                i += 1
                try:
                    response = post(client, url, [records[i % len(records)]])
                except httpx.HTTPError as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                version = (
                    response.json()["predictions"][0]["model_version"]
                    if response.status_code == 200
                    else None
                )
                results[slot].append((response.status_code, version))

    with running_service(config) as url:
        threads = [threading.Thread(target=client_loop, args=(slot, url)) for slot in range(4)]
        for thread in threads:
            thread.start()
        try:
            wait_for(lambda: sum(map(len, results)) >= 100, "100 answers from the old champion")
            set_aliases(registry, champion=new)
            wait_for(lambda: any(v == new for r in results for _, v in r[-3:]), "the new champion to answer")
            answered = sum(map(len, results))
            wait_for(lambda: sum(map(len, results)) >= answered + 100, "100 more answers")
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        with httpx.Client(timeout=30) as client:
            assert client.get(f"{url}/model").json()["version"] == new

    assert failures == []
    flat = [outcome for r in results for outcome in r]
    assert {status for status, _ in flat} == {200}
    for answers in results:  # each client saw the old version, then only the new one
        seen = [v for _, v in answers]
        switch = seen.index(new)
        assert set(seen[:switch]) == {old} and set(seen[switch:]) == {new}


def test_a_failed_reload_keeps_the_old_model_serving_and_is_reported(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    june: pd.DataFrame,
    tmp_path: Path,
) -> None:
    set_aliases(registry, champion=versions["forest"], challenger=None)
    # A version whose files are not a model: it registers fine and cannot load.
    experiment = registry.get_experiment_by_name(config.registry.experiment).experiment_id
    run_id = registry.create_run(experiment, run_name="not-a-model").info.run_id
    (tmp_path / "MLmodel").write_text("this is not a model\n")
    registry.log_artifact(run_id, str(tmp_path / "MLmodel"), "model")
    registry.set_terminated(run_id)
    broken = registry.create_model_version(MODEL, source=f"runs:/{run_id}/model", run_id=run_id).version

    with running_service(config) as url, httpx.Client(timeout=30) as client:
        set_aliases(registry, champion=broken)
        wait_for(
            lambda: client.get(f"{url}/model").json()["models"]["load_failures"],
            "the service to report the failed load",
        )
        model = client.get(f"{url}/model").json()
        assert model["version"] == versions["forest"]
        failure = model["models"]["load_failures"][0]
        assert failure["version"] == broken and failure["alias"] == "champion" and failure["error"]
        ready = client.get(f"{url}/ready")
        assert ready.status_code == 200 and f"v{broken} failed" in ready.json()["problems"][0]
        answer = post(client, url, to_records(june.head(2)))
        assert answer.status_code == 200
        assert {p["model_version"] for p in answer.json()["predictions"]} == {versions["forest"]}
        # Pointing the alias back at a good version clears the failure.
        set_aliases(registry, champion=versions["logistic"])
        wait_for(
            lambda: client.get(f"{url}/model").json()["version"] == versions["logistic"], "the good version"
        )
        assert client.get(f"{url}/ready").json()["problems"] == []


# -- shadow, canary, A/B: what the prediction log holds ------------------------------------------


def test_shadow_logs_both_arms_and_returns_only_the_champion(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    june: pd.DataFrame,
    sampled_landing: Store,
    tmp_path: Path,
) -> None:
    champion, challenger = versions["forest"], versions["logistic"]
    set_aliases(registry, champion=champion, challenger=challenger)
    log_uri = str(tmp_path / "predictions")
    rows = june.sample(n=600, random_state=5)
    records = to_records(rows)
    with (
        running_service(config, mode="shadow", prediction_log_uri=log_uri) as url,
        httpx.Client(timeout=60) as c,
    ):
        answers = [post(c, url, records[i : i + 20]).json() for i in range(0, 600, 20)]
    # Leaving the block shut the service down, which flushed the log.
    returned = [p for a in answers for p in a["predictions"]]
    assert {(p["arm"], p["model_version"]) for p in returned} == {("champion", champion)}
    assert {a["mode"] for a in answers} == {"shadow"}

    log = read_prediction_log(open_store(log_uri, config.data.s3))
    assert len(log) == 1200
    arms = log.groupby(["arm", "model_version", "served"]).size().to_dict()
    assert arms == {("champion", champion, True): 600, ("challenger", challenger, False): 600}
    assert set(log["request_id"]) == {a["request_id"] for a in answers}
    # The shadow scores are the challenger's own.
    shadow = log[~log["served"]].set_index("key").loc[rows["key"], "score"].to_numpy()
    np.testing.assert_array_equal(shadow, own_scores(config, challenger, rows))
    # Logged features are what was sent.
    logged = log[log["served"]].set_index("key").loc[rows["key"]]
    np.testing.assert_array_equal(logged["distance"].to_numpy(), rows["distance"].to_numpy())

    # June's labels are in the landing zone: the comparison joins them by key.
    shadow_config = config.model_copy(
        update={"serving": config.serving.model_copy(update={"prediction_log_uri": log_uri})}
    )
    # `mlops compare` runs the ground-truth flow first: the labelled log, then the comparison.
    from typer.testing import CliRunner

    from app.cli import app

    config_file = save_config(shadow_config, tmp_path / "mlops.yaml")
    with client_settings(config):
        shown = CliRunner().invoke(app, ["--config", str(config_file), "compare"])
    assert shown.exit_code == 0, shown.output
    assert "of 1200 logged rows labelled over 1 day(s)" in shown.output
    assert "paired on" in shown.output and "challenger" in shown.output
    result = compare_logged_traffic(shadow_config)
    assert result.logged_rows == 1200
    assert result.labelled_rows > 1000  # cancelled flights have no label
    assert result.paired_rows > 500 and set(result.paired) == {"champion", "challenger"}
    assert all(0.5 < arm.metrics["roc_auc"] <= 1 for arm in result.arms)


@pytest.mark.parametrize(("mode", "share"), [("canary", 0.3), ("ab", 0.5)])
def test_split_modes_route_by_key_in_the_configured_share(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    june: pd.DataFrame,
    tmp_path: Path,
    mode: str,
    share: float,
) -> None:
    champion, challenger = versions["forest"], versions["logistic"]
    set_aliases(registry, champion=champion, challenger=challenger)
    log_uri = str(tmp_path / "predictions")
    rows = june.sample(n=800, random_state=7)
    records = to_records(rows)
    settings = {"mode": mode, "canary_share": share, "ab_split": share, "prediction_log_uri": log_uri}
    with running_service(config, **settings) as url, httpx.Client(timeout=60) as client:
        first = [
            p for i in range(0, 800, 40) for p in post(client, url, records[i : i + 40]).json()["predictions"]
        ]
        again = post(client, url, records[:200]).json()["predictions"]  # the same keys, later
        # A record without a key follows the routing header: every record of the request alike.
        keyless = [{k: v for k, v in r.items() if k != "key"} for r in records[:30]]
        by_header = post(client, url, keyless, headers={"X-Routing-Key": "customer-42"}).json()["predictions"]

    arms = np.array([p["arm"] for p in first])
    to_challenger = arms == "challenger"
    n = len(arms)
    spread = 5 * math.sqrt(n * share * (1 - share))  # a Binomial(n, share) count misses this < 1e-6
    assert n * share - spread < to_challenger.sum() < n * share + spread
    # Sticky: each key lands where the documented hash puts it, and stays there.
    plan = RoutingPlan.for_models(mode, share, share, challenger)
    assert (plan.to_challenger(rows["key"].tolist()) == to_challenger).all()
    assert [p["arm"] for p in again] == arms[:200].tolist()
    assert len({p["arm"] for p in by_header}) == 1
    # Each arm's answers are its own model's.
    served = np.array([p["probability"] for p in first])
    np.testing.assert_array_equal(served[to_challenger], own_scores(config, challenger, rows[to_challenger]))
    np.testing.assert_array_equal(served[~to_challenger], own_scores(config, champion, rows[~to_challenger]))

    log = read_prediction_log(open_store(log_uri, config.data.s3))
    assert len(log) == 800 + 200 + 30 and log["served"].all() and set(log["mode"]) == {mode}
    logged = log.drop_duplicates("key").set_index("key").loc[rows["key"]]
    assert (logged["arm"].to_numpy() == arms).all()
    assert (logged.loc[logged["arm"] == "challenger", "model_version"] == challenger).all()


def test_rank_interleaves_both_arms_logs_both_rankings_and_compare_credits_them(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    june: pd.DataFrame,
    tmp_path: Path,
) -> None:
    champion, challenger = versions["forest"], versions["logistic"]
    set_aliases(registry, champion=champion, challenger=challenger)
    log_uri = str(tmp_path / "predictions")
    rows = june.sample(n=600, random_state=11)
    records = to_records(rows)
    with (
        running_service(config, mode="interleave", prediction_log_uri=log_uri) as url,
        httpx.Client(timeout=60) as c,
    ):
        answers = []
        for i in range(0, 600, 20):  # 30 requests of 20 flights: "which 5 are most at risk?"
            response = c.post(f"{url}/rank", json={"records": records[i : i + 20], "k": 5})
            assert response.status_code == 200, response.text
            answers.append(response.json())
        again = c.post(
            f"{url}/rank",
            json={"records": records[:20], "k": 5},
            headers={"X-Request-ID": answers[0]["request_id"]},
        ).json()
        # Sent at once, requests are ranked in shared batches: each gets its own answer back.
        with ThreadPoolExecutor(10) as pool:
            together = list(
                pool.map(
                    lambda i: c.post(
                        f"{url}/rank",
                        json={"records": records[i * 20 : i * 20 + 20], "k": 5},
                        headers={"X-Request-ID": answers[i]["request_id"]},
                    ).json(),
                    range(10),
                )
            )
        refused = {
            field: c.post(f"{url}/rank", json=body).json()["detail"][0]["loc"]
            for field, body in {
                "empty": {"records": [], "k": 1},
                "k": {"records": records[:3], "k": 4},
                "duplicate": {"records": [records[0], records[0]], "k": 1},
            }.items()
        }
        plain = c.post(f"{url}/predict", json={"records": records[:5]}).json()  # the champion's alone

    assert {a["mode"] for a in answers} == {"interleave"}
    first = answers[0]["ranked"]
    assert len(first) == 5 and len({r["key"] for r in first}) == 5
    assert {r["arm"] for a in answers for r in a["ranked"]} == {"champion", "challenger"}
    # The first record is the top one of the arm that won the toss, by its own model's score.
    top = first[0]
    own = own_scores(config, champion if top["arm"] == "champion" else challenger, rows.iloc[:20])
    assert top["key"] == rows["key"].iloc[int(np.argmax(own))]
    assert top["score"] == pytest.approx(own.max())
    assert again["ranked"] == first  # the same request id draws the same coin
    assert [t["ranked"] for t in together] == [a["ranked"] for a in answers[:10]]
    assert refused == {
        "empty": ["body", "records"],
        "k": ["body", "k"],
        "duplicate": ["body", "records", 1, "key"],
    }
    assert {p["arm"] for p in plain["predictions"]} == {"champion"}

    log = read_prediction_log(open_store(log_uri, config.data.s3))
    ranked = log[log["mode"] == "interleave"]
    assert len(ranked) == 2 * (600 + 20 + 200) + 5  # both arms score every ranked record; /predict the 5
    # (request 15 was sent once: the first ten were sent twice, alone and together)
    one = ranked[ranked["request_id"] == answers[15]["request_id"]]
    for arm in ("champion", "challenger"):
        mine = one[one["arm"] == arm].sort_values("rank")
        assert sorted(mine["rank"].astype(int)) == list(range(20))
        placed = {int(p): k for p, k in zip(mine["position"], mine["key"], strict=True) if pd.notna(p)}
        assert placed == {r["position"]: r["key"] for r in answers[15]["ranked"] if r["arm"] == arm}

    # June's labels have landed: the ground-truth flow joins them, compare credits the arms.
    labelled_config = config.model_copy(
        update={"serving": config.serving.model_copy(update={"prediction_log_uri": log_uri})}
    )
    config_file = save_config(labelled_config, tmp_path / "mlops.yaml")
    with client_settings(config):
        ground_truth(GroundTruthRequest(config_path=str(config_file)))
    credit = compare_logged_traffic(labelled_config).interleaving
    assert credit is not None and 0 < credit.requests <= 31
    assert credit.wins + credit.losses + credit.ties == credit.requests
    assert 0 <= credit.p_value <= 1


def test_the_prediction_log_can_live_on_s3(
    config: ProjectConfig, registry: MlflowClient, versions: dict[str, str], june: pd.DataFrame, moto_s3: str
) -> None:
    import boto3

    bucket = f"predictions-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket=bucket)
    s3 = config.data.s3.model_copy(update={"endpoint_url": moto_s3})
    on_s3 = config.model_copy(update={"data": config.data.model_copy(update={"s3": s3})})
    set_aliases(registry, champion=versions["forest"], challenger=None)
    records = to_records(june.head(50))
    with (
        running_service(on_s3, prediction_log_uri=f"s3://{bucket}/predictions") as url,
        httpx.Client() as client,
    ):
        ids = [post(client, url, records[i : i + 10]).json()["request_id"] for i in range(0, 50, 10)]
    store = open_store(f"s3://{bucket}/predictions", s3)
    assert all(key.startswith("date=") and key.endswith(".parquet") for key in store.list())
    log = read_prediction_log(store)
    assert len(log) == 50 and set(log["request_id"]) == set(ids)
    assert log["key"].tolist() == [r["key"] for r in records]


def test_a_full_prediction_log_refuses_requests_with_a_503_and_loses_no_row(
    config: ProjectConfig, registry: MlflowClient, versions: dict[str, str], june: pd.DataFrame, moto_s3: str
) -> None:
    """The log's store is down (its bucket does not exist yet): the buffer fills to its
    bound, requests wait for room and are then refused with a 503 naming the log, never
    answered with their log rows dropped. Once the store is back, every answered request's
    rows are written."""
    import boto3

    bucket = f"late-{uuid.uuid4().hex[:12]}"
    s3 = config.data.s3.model_copy(update={"endpoint_url": moto_s3})
    on_s3 = config.model_copy(update={"data": config.data.model_copy(update={"s3": s3})})
    set_aliases(registry, champion=versions["forest"], challenger=None)
    records = to_records(june.head(10))
    settings = {
        "prediction_log_uri": f"s3://{bucket}/predictions",
        "log_flush_rows": 10,
        "log_flush_seconds": 0.2,
        "log_max_buffered_rows": 30,
        "log_full_wait_seconds": 0.5,
    }
    answered: list[str] = []
    with running_service(on_s3, **settings) as url, httpx.Client(timeout=60) as client:
        refused = None
        for _ in range(20):
            response = post(client, url, records)
            if response.status_code == 503:
                refused = response
                break
            assert response.status_code == 200, response.text
            answered.append(response.json()["request_id"])
        assert refused is not None, "the service kept answering with its log's store down"
        assert len(answered) >= 3  # the bound is 30 rows: three requests of ten fill it
        assert "prediction log" in refused.json()["error"] and bucket in refused.json()["error"]
        assert int(refused.headers["Retry-After"]) >= 1
        state = client.get(f"{url}/model").json()["prediction_log"]
        assert state["refused_requests"] >= 1 and state["buffered_rows"] >= 30
        assert state["written_rows"] == 0 and state["last_error"]

        boto3.client("s3", endpoint_url=moto_s3, region_name="us-east-1").create_bucket(Bucket=bucket)
        wait_for(lambda: post(client, url, records).status_code == 200, "the log to make room", timeout=60)
        answered.append("(the request that found room)")
    log = read_prediction_log(open_store(f"s3://{bucket}/predictions", s3))
    # Every answered request's rows are in the log, and no refused request's.
    assert len(log) == 10 * len(answered)
    assert set(answered[:-1]) <= set(log["request_id"])


# -- progressive canary: `mlops rollout` against this service ---------------------------------


@pytest.fixture(scope="module")
def forest_to_may(stack, config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A forest trained on 2013-01..05 like the logistic champion, so the promotion gates that
    end a rollout judge both on June, which neither saw."""
    return train_to_may(config, FOREST, tmp_path_factory.mktemp("forest-may"))


@pytest.fixture(scope="module")
def slow_forest(stack, config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same forest with 30x the trees: a call to it costs several times the champion's, by
    construction (each tree is its own `predict` call on the compiled path)."""
    many_trees = FOREST.model_copy(update={"params": {**FOREST.params, "n_estimators": 1200}})
    return train_to_may(config, many_trees, tmp_path_factory.mktemp("slow-forest"))


def train_to_may(config: ProjectConfig, candidate: CandidateConfig, folder: Path) -> str:
    training = config.training.model_copy(update={"candidates": [BASELINE, candidate]})
    path = save_config(config.model_copy(update={"training": training}), folder / "mlops.yaml")
    with client_settings(config):
        outcome = training_pipeline(TrainingRequest(start="2013-01", end="2013-05", config_path=str(path)))
    return outcome.model_version


class Traffic:
    """Clients sending June's flights (with their keys, so June's labels join) until stopped."""

    def __init__(self, url: str, june: pd.DataFrame, records_per_request: int = 5) -> None:
        self.url, self.records = url, to_records(june)
        self.per_request = records_per_request
        self.stopped = threading.Event()
        self.statuses: list[int] = []
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        rng = np.random.default_rng(5)
        with httpx.Client(timeout=30) as client:
            while not self.stopped.is_set():
                chosen = [self.records[i] for i in rng.choice(len(self.records), self.per_request)]
                try:
                    self.statuses.append(client.post(f"{self.url}/predict", json=chosen).status_code)
                except httpx.HTTPError:  # the service is restarting
                    self.statuses.append(0)
                    time.sleep(0.2)
                time.sleep(0.01)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopped.set()
        self.thread.join(30)


def rollout_config(config: ProjectConfig, folder: Path, port: int, **rollout: Any) -> Path:
    settings = {
        "shares": [0.25, 1.0],
        "min_requests": 60,
        "min_seconds": 2.0,
        "max_seconds": 150.0,
        "check_seconds": 0.5,
        "service_url": f"http://127.0.0.1:{port}",
        "quality_min_rows": 30,
        **rollout,
    }
    serving = config.serving.model_copy(
        update={
            "mode": "canary",
            "port": port,
            "prediction_log_uri": str(folder / "predictions"),
            "rollout": RolloutConfig(**settings),
        }
    )
    return save_config(config.model_copy(update={"serving": serving}), folder / "mlops.yaml")


def share_of(url: str) -> tuple[str | None, float | None]:
    try:
        info = httpx.get(f"{url}/model", timeout=10).json()
    except httpx.HTTPError:
        return None, None
    return (info["models"]["challenger"] or {}).get("version"), info["challenger_share"]


def test_a_rollout_that_holds_its_guardrails_survives_a_service_restart_and_promotes(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    forest_to_may: str,
    june: pd.DataFrame,
    tmp_path: Path,
) -> None:
    champion, challenger = versions["logistic"], forest_to_may
    set_aliases(registry, champion=champion, challenger=challenger, previous=None)
    port = free_port()
    path = rollout_config(config, tmp_path, port, min_seconds=8.0)  # the restart falls in step 1
    served = load_config(path)
    outcome: dict[str, Any] = {}

    def run() -> None:
        with client_settings(config):
            outcome["rollout"] = rollout(RolloutRequest(config_path=str(path)))

    flow_thread = threading.Thread(target=run, name="rollout", daemon=True)
    with running_service(served, port=port) as url, Traffic(url, june) as traffic:
        flow_thread.start()
        wait_for(lambda: share_of(url) == (challenger, 0.25), "the service to route 25% to the challenger")
        with client_settings(config), pytest.raises(RolloutError, match="another rollout"):
            rollout(RolloutRequest(config_path=str(path)))  # one at a time
    # The service went down mid-step (the traffic's clients see refused connections); a new
    # process starts from the registry and comes back at the share recorded there.
    with running_service(served, port=port) as url, Traffic(url, june) as traffic:
        recorded = RolloutState.from_tags(registry.get_registered_model(MODEL).tags)
        assert recorded is not None and (recorded.version, recorded.share) == (challenger, 0.25)
        assert share_of(url) == (challenger, 0.25)
        flow_thread.join(300)
    assert not flow_thread.is_alive(), "the rollout did not finish within 300 s"
    assert 200 in traffic.statuses

    result = outcome["rollout"]
    print(*(s.as_row() for s in result.steps), sep="\n")  # the figures, shown with pytest -rP
    assert result.result == "promoted", result.reason
    assert [(s.step, s.share, s.outcome) for s in result.steps] == [(1, 0.25, "passed"), (2, 1.0, "passed")]
    for step in result.steps:
        checks = {g.name: g for g in step.guardrails}
        assert step.challenger_rows >= 60
        assert checks["rollout.error_rate"].passed and checks["rollout.p99_scoring_ratio"].passed
        assert checks["rollout.score_ks"].status == "passed"
    # The last step had June's labels joined: live quality was judged, on the canary's own rows.
    assert result.steps[-1].guardrails[-1].status == "passed"
    assert registry.get_registered_model(MODEL).aliases["champion"] == challenger
    assert ROLLOUT_TAG not in registry.get_registered_model(MODEL).tags
    runs = registry.search_runs(
        [registry.get_experiment_by_name(config.registry.experiment).experiment_id],
        f"tags.pipeline = 'rollout' and tags.model_version = '{challenger}'",
    )
    assert sorted(r.data.params["share"] for r in runs) == ["0.25", "1.0"]
    assert all(r.data.metrics["challenger_rows"] >= 60 for r in runs)


def test_a_slow_challenger_breaches_the_latency_guardrail_and_is_rolled_out_within_one_step(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    slow_forest: str,
    june: pd.DataFrame,
    tmp_path: Path,
) -> None:
    champion, challenger = versions["forest"], slow_forest
    set_aliases(registry, champion=champion, challenger=challenger)
    port = free_port()
    path = rollout_config(config, tmp_path, port, shares=[0.5, 1.0], max_score_ks=None, min_seconds=60.0)
    since = datetime.now(UTC)
    with running_service(load_config(path), port=port) as url, Traffic(url, june):
        with client_settings(config):
            result = rollout(RolloutRequest(config_path=str(path)))
        wait_for(lambda: share_of(url) == (None, None), "the service to drop the challenger")

    print(*(s.as_row() for s in result.steps), sep="\n")
    assert result.result == "rolled_back"
    (step,) = result.steps  # rolled out within the first step, before its 60 s were up
    assert step.outcome == "breached" and step.seconds < 60
    (breach,) = [g for g in step.guardrails if not g.skipped and not g.passed]
    assert breach.name == "rollout.p99_scoring_ratio" and breach.value > 2.0
    assert "challenger" not in registry.get_registered_model(MODEL).aliases
    tags = registry.get_model_version(MODEL, challenger).tags
    assert tags["rollout"] == "rolled_back" and "p99" in tags["rollout.reason"]
    with client_settings(config):
        events = find_events(
            BREACHED_EVENT, since, resource={"id": [f"mlflow.model-version.{MODEL}.{challenger}"]}
        )
    assert events and "p99" in events[0]["payload"]["reason"]
    # Again from the command line: nothing left to roll out, said in one line.
    again = CliRunner().invoke(cli, ["--config", str(path), "rollout"])
    assert again.exit_code == 1
    assert "no version with alias 'challenger' to roll out" in again.output
    assert "Traceback" not in again.output


# -- the prediction web page, in a real headless browser --------------------------------------


def test_the_web_page_scores_a_record_from_its_form_and_plots_where_it_falls(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    june: pd.DataFrame,
    sampled_landing: Store,
) -> None:
    from playwright.sync_api import sync_playwright

    champion = versions["forest"]
    set_aliases(registry, champion=champion, challenger=None)
    # The form is a record as it lands; the same flight as a feature row gets the same answer.
    (feature_row,) = to_records(june.dropna().head(1))
    landed = landed_frame(config, sampled_landing, "2013-06").set_index("key", drop=False)
    record = to_records(landed.loc[[feature_row["key"]]])[0]
    with running_service(config) as url, httpx.Client(timeout=60) as client, sync_playwright() as browsers:
        expected = post(client, url, [record]).json()["predictions"][0]
        as_features = post(client, url, [feature_row]).json()["predictions"][0]
        browser = browsers.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{url}/")
            fields = page.locator("form [name]").all()
            names = [f.get_attribute("name") for f in fields]
            for field in fields:
                name = field.get_attribute("name") or ""
                if field.evaluate("e => e.tagName") == "SELECT":
                    field.select_option(record[name])  # the encoder's categories are the choices
                else:
                    field.fill("" if record[name] is None else str(record[name]))
            page.click("#predict")
            page.wait_for_selector("#answer")
            answer = json.loads(page.get_attribute("#answer", "data-answer") or "{}")
            shown = page.inner_text("#answer")
            plot = page.locator("#score-plot")
            bars = page.locator("#score-plot rect.bar").count()
            marker_x = float(page.locator("#score-marker").get_attribute("x1") or "nan")
            drawn = plot.bounding_box()
            about = page.inner_text("#model")
            links = [a.get_attribute("href") for a in page.locator("a").all()]
            # A field the schema refuses comes back on the page, named, with a 422.
            page.goto(f"{url}/")
            page.fill("#distance", "far")
            with page.expect_response(lambda r: r.request.method == "POST") as refused:
                page.click("#predict")
            error, refused_status = page.inner_text("#error"), refused.value.status
        finally:
            browser.close()

    assert {"time_hour", "tailnum", "origin"} <= set(names) and "temp" not in names  # raw, not looked up
    assert as_features["probability"] == expected["probability"]
    assert answer == {"probability": expected["probability"], "label": expected["label"]}
    assert shown == f"probability {expected['probability']:.4g}, label {expected['label']}"
    assert bars == 40 and drawn is not None and drawn["width"] > 100 and drawn["height"] > 50
    assert marker_x == pytest.approx(expected["probability"] * 480, abs=0.06)  # where the score falls
    assert f"v{champion}" in about and "compiled fast path" in about
    assert f"{config.stack.tracking_uri}/#/models/{MODEL}/versions/{champion}" in links
    assert any(link and "/artifacts/key/lineage-" in link for link in links)
    assert refused_status == 422 and "distance" in error


# -- records as they land -----------------------------------------------------------------


@pytest.fixture(scope="module")
def june_landed(config: ProjectConfig, sampled_landing: Store) -> pd.DataFrame:
    """June's flights as they landed (times as ISO text, no label), with their key."""
    return landed_frame(config, sampled_landing, "2013-06").set_index("key", drop=False)


def test_records_as_they_land_get_the_answers_of_the_standard_mlflow_client_and_of_their_feature_rows(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    june: pd.DataFrame,
    june_landed: pd.DataFrame,
    sampled_landing: Store,
    tmp_path: Path,
) -> None:
    """The service looks landed records up and derives their features inside the model: the
    answers equal `mlflow.pyfunc` on the same rows (against the real MLflow server), and the
    answers to the same flights sent as feature rows. The log records which snapshots answered."""
    import mlflow.pyfunc

    champion = versions["forest"]
    set_aliases(registry, champion=champion, challenger=None)
    rows = june.sample(n=300, random_state=11)
    landed = june_landed.loc[rows["key"]]
    log_uri = str(tmp_path / "predictions")
    # A 50 ms gathering window, so the concurrent requests below share micro-batches.
    with (
        running_service(config, prediction_log_uri=log_uri, batch_wait_ms=50) as url,
        httpx.Client(timeout=60) as client,
    ):
        as_landed = post(client, url, {"records": to_records(landed)})
        as_features = post(client, url, {"records": to_records(rows)})
        described = client.get(f"{url}/model").json()["models"]["champion"]
        mixed, calls = mixed_single_requests(url, to_records(landed.head(16)), to_records(rows.head(16)))
    assert as_landed.status_code == 200, as_landed.text[:500]
    served = np.array([p["probability"] for p in as_landed.json()["predictions"]])
    np.testing.assert_array_equal(served, [p["probability"] for p in as_features.json()["predictions"]])
    # Sent one record a request, alternating forms, at once: batched together (fewer model
    # calls than requests), each answered as when it came alone.
    assert calls < 32
    np.testing.assert_array_equal(mixed, np.repeat(served[:16], 2))

    with client_settings(config):
        standard = mlflow.pyfunc.load_model(f"models:/{MODEL}/{champion}")
        landed_as_is = landed.drop(columns=["key"]).reset_index(drop=True)
        client_answer = np.asarray(standard.predict(landed_as_is))[:, 1]  # ISO text times, as JSON sends them
    np.testing.assert_allclose(served, client_answer, rtol=0, atol=1e-12)
    assert np.ptp(served) > 0

    snapshots = json.loads(registry.get_model_version(MODEL, champion).tags["snapshots"])
    expected = f"planes@{snapshots['planes/static'][:12]},weather@{snapshots['weather/static'][:12]}"
    assert described["takes_landed_records"] is True and described["dimensions"] == expected
    log = read_prediction_log(open_store(log_uri, config.data.s3))
    by_form = log.groupby(log["dimensions"].fillna("(features)")).size().to_dict()
    assert by_form == {expected: 316, "(features)": 316}
    # The log holds the features the model computed, as the feature rows had them.
    landed_rows = log[log["dimensions"].notna()].drop_duplicates("key").set_index("key")
    logged = landed_rows.loc[rows["key"], config.features.numeric]
    np.testing.assert_array_equal(logged.to_numpy(), rows[config.features.numeric].to_numpy())


def mixed_single_requests(
    url: str, landed: list[dict[str, Any]], features: list[dict[str, Any]]
) -> tuple[np.ndarray, int]:
    """Each flight sent twice at once, as it landed and as its feature row (32 requests of one
    record from 32 threads): the answers in that order, and how many model calls served them."""
    bodies = [body for pair in zip(landed, features, strict=True) for body in pair]
    answers: list[float] = [np.nan] * len(bodies)
    start = threading.Barrier(len(bodies))

    def send(i: int) -> None:
        with httpx.Client(timeout=60) as client:
            start.wait(30)
            response = post(client, url, [bodies[i]])
            response.raise_for_status()
            answers[i] = response.json()["predictions"][0]["probability"]

    def model_calls() -> int:
        return httpx.get(f"{url}/model", timeout=30).json()["scoring"]["by_arm"]["arms"]["champion"]["calls"]

    before = model_calls()
    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return np.array(answers), model_calls() - before


LANDED_BAD = {
    "missing join key": (lambda r: {k: v for k, v in r.items() if k != "tailnum"}, "tailnum"),
    "wrong type": (lambda r: r | {"distance": "far"}, "distance"),
    "time that is not a time": (lambda r: r | {"time_hour": "next tuesday"}, "time_hour"),
    "unknown field": (lambda r: r | {"tail_number": "N1"}, "tail_number"),
}


def test_a_bad_landed_record_is_a_422_naming_the_field_and_the_openapi_schema_shows_both_forms(
    config: ProjectConfig, registry: MlflowClient, versions: dict[str, str], june_landed: pd.DataFrame
) -> None:
    set_aliases(registry, champion=versions["forest"], challenger=None)
    (record,) = to_records(june_landed.head(1))
    with running_service(config) as url, httpx.Client(timeout=60) as client:
        refused = {
            name: post(client, url, {"records": [bad(record)]}) for name, (bad, _) in LANDED_BAD.items()
        }
        unseen = post(client, url, {"records": [record | {"carrier": "ZZ-never-seen"}]})
        spec = client.get(f"{url}/openapi.json").json()
    for name, (_, field) in LANDED_BAD.items():
        assert refused[name].status_code == 422, (name, refused[name].text[:300])
        assert field in refused[name].json()["error"], (name, refused[name].json())
    # An unknown category is what it is in the feature form: scored as a category never seen.
    assert unseen.status_code == 200 and 0 < unseen.json()["predictions"][0]["probability"] < 1
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    refs = json.dumps(body)
    assert (
        "#/components/schemas/PredictRequest" in refs and "#/components/schemas/LandedPredictRequest" in refs
    )
    landed_fields = spec["components"]["schemas"]["LandedRecord"]
    assert {"time_hour", "tailnum"} <= set(landed_fields["required"]) and "temp" not in landed_fields[
        "properties"
    ]


def test_fresh_dimensions_from_landing_answer_and_an_unreadable_one_keeps_the_serving_model(
    config: ProjectConfig,
    registry: MlflowClient,
    versions: dict[str, str],
    june_landed: pd.DataFrame,
    sampled_landing: Store,
    tmp_path: Path,
) -> None:
    """`serving.dimensions: landing`: the weather the model looks records up in is today's
    landing file (snapshotted, and named in the log), not the one it was trained with, and a
    newer file answers within a refresh period, without a reload; a landing file that cannot
    be read keeps the tables before it, stops a new version from being swapped in, and /ready
    says both."""
    forest, logistic = versions["forest"], versions["logistic"]
    set_aliases(registry, champion=forest, challenger=None)
    landing = tmp_path / "landing"
    for table in ("weather", "planes"):
        key = config.data.tables[table].key()
        (landing / key).parent.mkdir(parents=True, exist_ok=True)
        (landing / key).write_bytes(sampled_landing.read_bytes(key))
    weather = pd.read_parquet(landing / "weather.parquet")
    weather["temp"] = weather["temp"] + 30.0  # a heat wave the model never saw
    weather.to_parquet(landing / "weather.parquet")
    fresh = sha256_bytes((landing / "weather.parquet").read_bytes())
    data = config.data.model_copy(
        update={"landing_uri": str(landing), "snapshot_uri": str(tmp_path / "snaps")}
    )
    hot = config.model_copy(update={"data": data})
    records = to_records(june_landed.sample(n=200, random_state=3))
    log_uri = str(tmp_path / "predictions")
    with running_service(config) as url, httpx.Client(timeout=60) as client:
        trained_weather = [
            p["probability"] for p in post(client, url, {"records": records}).json()["predictions"]
        ]
    with (
        running_service(
            hot, dimensions="landing", dimensions_refresh_seconds=0.5, prediction_log_uri=log_uri
        ) as url,
        httpx.Client(timeout=60) as client,
    ):

        def dimensions() -> str:
            return client.get(f"{url}/model").json()["models"]["champion"]["dimensions"]

        hot_weather = [
            p["probability"] for p in post(client, url, {"records": records}).json()["predictions"]
        ]
        described = dimensions()
        # A newer weather file lands (a cold snap: hotter would give the same answers, the
        # forest's splits end below +30): the same version answers with it, without a reload.
        weather["temp"] = weather["temp"] - 90.0
        weather.to_parquet(landing / "weather.parquet")
        fresher = sha256_bytes((landing / "weather.parquet").read_bytes())
        wait_for(lambda: f"weather@{fresher[:12]}" in dimensions(), "the newer weather to be attached")
        cold_weather = [
            p["probability"] for p in post(client, url, {"records": records}).json()["predictions"]
        ]
        # Now the landing weather cannot be read, and the champion moves: the old one keeps serving.
        (landing / "weather.parquet").write_bytes(b"not a parquet file")
        set_aliases(registry, champion=logistic)
        wait_for(
            lambda: len(client.get(f"{url}/ready").json()["problems"]) == 2,
            "the failed re-read and the failed load to be reported",
        )
        ready = client.get(f"{url}/ready").json()
        still = post(client, url, {"records": records[:5]}).json()["predictions"]
        still_dimensions = dimensions()
    set_aliases(registry, champion=forest)
    assert hot_weather != trained_weather and cold_weather != hot_weather
    assert f"weather@{fresh[:12]}" in described
    assert (tmp_path / "snaps" / "weather" / f"{fresh}.parquet").exists()  # kept, as every snapshot is
    log = read_prediction_log(open_store(log_uri, config.data.s3))
    weather_of = log["dimensions"].str.extract(r"weather@(\w+)")[0].value_counts().to_dict()
    assert weather_of == {fresh[:12]: 200, fresher[:12]: 205}
    assert ready["ready"] is True and ready["model_version"] == forest
    assert any("weather" in p and "not swapped in" in p for p in ready["problems"]), ready["problems"]
    assert any("still looks records up in" in p for p in ready["problems"]), ready["problems"]
    assert f"weather@{fresher[:12]}" in still_dimensions
    assert {p["model_version"] for p in still} == {forest}
