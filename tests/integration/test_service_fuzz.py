"""Schemathesis against the prediction service's own OpenAPI document: whatever a client
sends that the spec allows (and, in negative mode, what it does not), the service never
answers 5xx, and its answers conform to the spec.

The service runs under uvicorn on loopback (as in test_serving.py), serving a random forest
registered in the session's MLflow server under a model name of its own. The forest is the
kind of model the pipeline serves (the baselines are never promoted), and it computes in
float32, so huge numbers the schema allows reach a model that cannot score them.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import hypothesis
import pandas as pd
import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mlops.clients import client_settings
from mlops.config import CandidateConfig, ProjectConfig, ServingConfig
from mlops.objective import Objective
from mlops.storage import Store
from mlops.tracking import Tracker, skops_types
from tasks.features import build_training_frame
from tasks.train import build_pipeline
from tests.integration.test_serving import running_service

pytestmark = pytest.mark.integration

MODEL = "flight-delay-fuzz"
FOREST = CandidateConfig(
    name="random_forest",
    estimator="random_forest",
    encoding="ordinal",
    params={"n_estimators": 20, "max_depth": 8, "min_samples_leaf": 20, "n_jobs": 1},
)
MAX_EXAMPLES = 50  # per operation and generation mode


@pytest.fixture(scope="module")
def fuzz_config(stack_config: ProjectConfig, tmp_path_factory: pytest.TempPathFactory) -> ProjectConfig:
    tmp = tmp_path_factory.mktemp("fuzz")
    serving = ServingConfig(
        prediction_log_uri=str(tmp / "predictions"),
        poll_seconds=30,
        max_records=200,  # keeps generated bodies small: the limit itself is answered with a 413
        max_body_bytes=200_000,
    )
    registry = stack_config.registry.model_copy(update={"model_name": MODEL})
    return stack_config.model_copy(update={"serving": serving, "registry": registry})


@pytest.fixture(scope="module")
def fuzz_model(stack, sampled_landing: Store, fuzz_config: ProjectConfig) -> str:
    """A forest fitted on two sampled months with the pipeline's own feature code, registered
    through the project's Tracker and made champion. Returns its version."""
    data = fuzz_config.data

    def read(key: str) -> pd.DataFrame:
        return pd.read_parquet(io.BytesIO(sampled_landing.read_bytes(key)))

    batches = {p: read(data.tables[data.batch_table].key(p)) for p in ("2013-01", "2013-02")}
    dims = {join.table: read(data.tables[join.table].key()) for join in data.joins}
    training = build_training_frame(batches, dims, fuzz_config, "fuzz")
    features = fuzz_config.features
    pipeline = build_pipeline(FOREST, features, Objective.of(fuzz_config), fuzz_config.training.seed)
    pipeline.fit(training.frame[features.columns], training.frame[fuzz_config.target.label])
    with client_settings(fuzz_config):
        tracker = Tracker(fuzz_config.stack.tracking_uri, fuzz_config.registry.experiment)
        with tracker.pipeline_run("fuzz-model", {"pipeline": "fuzz"}):
            registered = tracker.register_model(
                pipeline,
                MODEL,
                training.frame[features.columns],
                {},
                "fitted for the OpenAPI fuzz test",
                trusted_types=skops_types(pipeline),
            )
        tracker.set_alias(MODEL, "champion", registered.version)
    return registered.version


@pytest.fixture(scope="module")
def service_url(fuzz_config: ProjectConfig, fuzz_model: str) -> Iterator[str]:
    with running_service(fuzz_config) as url:
        yield url


@pytest.fixture(scope="module")
def api_schema(service_url: str):
    return schemathesis.openapi.from_url(f"{service_url}/openapi.json")


# Every operation the spec lists, and how it is fuzzed: positive examples fit the spec,
# negative ones break it on purpose (only the bodies of /predict and /rank have a schema to break).
FUZZED = [
    ("GET", "/health", GenerationMode.POSITIVE),
    ("GET", "/ready", GenerationMode.POSITIVE),
    ("GET", "/model", GenerationMode.POSITIVE),
    ("POST", "/predict", GenerationMode.POSITIVE),
    ("POST", "/predict", GenerationMode.NEGATIVE),
    ("POST", "/rank", GenerationMode.POSITIVE),
    ("POST", "/rank", GenerationMode.NEGATIVE),
]
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_every_operation_of_the_spec_is_fuzzed(api_schema) -> None:
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert listed == {(method, path) for method, path, _ in FUZZED}


@pytest.mark.parametrize(("method", "path", "mode"), FUZZED, ids=[f"{m} {p} {g.value}" for m, p, g in FUZZED])
def test_no_5xx_and_answers_conform(
    api_schema, service_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path][method]

    # Seeded (derandomize): the same examples every run, so a failure is a bug, never bad luck.
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,  # the shared CI machine's timing is not under test
        database=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate, hypothesis.Phase.shrink],
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
    def check(case) -> None:
        case.call_and_validate(base_url=service_url, checks=CHECKS)

    check()
