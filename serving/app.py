"""The HTTP surface of the prediction service (FastAPI on uvicorn).

- `POST /predict`: `{"records": [{...}, ...]}` or a bare list of records; answers each
  record with the probability of the positive class, its 0/1 label at
  `training.threshold`, the arm and model version that answered, and the request id.
  Bad input is a 4xx with the field and the reason, never a 500: 400 for a body that is
  not JSON, 413 for a body over `serving.max_body_bytes` or more records than
  `serving.max_records`, 422 for anything else (a missing, extra or mistyped field, null
  where a list belongs, NaN or infinity, an empty list). Unseen categories are fine: the
  model's encoder maps them to "unknown".
- `GET /health` (the process answers), `GET /ready` (a model is loaded; 503 otherwise),
  `GET /model` (what is served, its metrics, the mode, reload failures, log state),
  `GET /openapi.json` and `/docs`.

The service reads the config once (`create_app`), loads the models before it accepts a
request, and then follows the registry (see `serving.models`). The handlers are in
`serving.routes`; this module builds the app around them: start-up and shutdown, the
shared `Service` in `app.state`, the OpenAPI document, and the server.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import warnings
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import TypeAdapter

from mlops.config import ProjectConfig, load_config
from mlops.errors import MlopsError
from mlops.objective import Objective
from mlops.prediction_log import log_schema
from mlops.record_features import RecordFeatures
from mlops.storage import Store, Stores
from serving.fastpath import compile_scorer
from serving.models import LoadedModel, ModelWatcher, RegistrySource
from serving.predlog import PredictionLog
from serving.routes import Service, add_routes, json_response
from serving.schema import ARROW_STREAM, FeatureSchema, LandedSchema
from serving.scoring import Scorer
from tasks.ingest import snapshot_tables

logger = logging.getLogger("serving.app")
SCHEMA_REF = "#/components/schemas/{model}"


def create_app(config: ProjectConfig, own_process: bool = False) -> FastAPI:
    """The service for one config, serving from the MLflow registry of `config.stack`.
    `own_process` lets it tune the garbage collector of a process that does nothing else."""
    settings = config.serving
    schema = FeatureSchema(config.features)  # a bad feature list fails here, before serving
    store = Stores.from_config(config).predictions
    app = FastAPI(
        title=f"{config.project} prediction service",
        description=(
            f"Scores records with `{config.registry.model_name}@champion` from the MLflow registry "
            f"(mode: {settings.mode}). Every prediction is logged to {settings.prediction_log_uri}."
        ),
        version="1",
        lifespan=service_lifespan(config, schema, store, own_process),
    )
    app.add_exception_handler(Exception, unexpected)
    add_routes(app, config.target.kind)
    app.openapi = lambda: openapi_with_request_body(app, schema, _landed_schema(app))  # type: ignore[method-assign]
    return app


def landing_dimensions(config: ProjectConfig, stores: Stores) -> Callable[[RecordFeatures], RecordFeatures]:
    """`serving.dimensions: landing`: a record step looking up the tables' current landing
    files instead of the snapshots it shipped with."""

    def attach(record: RecordFeatures) -> RecordFeatures:
        tables = sorted(record.tables or {})
        try:
            found = snapshot_tables(config.data, stores.landing, stores.snapshots, tables)
            return record.with_tables(
                {t: frame for t, (_, frame) in found.items()},
                {t: snap.sha256 for t, (snap, _) in found.items()},
            )
        except Exception as exc:  # missing, unreadable, or without the columns the model looks up
            raise MlopsError(
                f"cannot attach the current snapshots of {tables} from {stores.landing.uri} ({exc}):"
                " fix the landing files or set serving.dimensions: model"
            ) from None

    return attach


def dimension_refresher(
    attach: Callable[[RecordFeatures], RecordFeatures],
) -> Callable[[LoadedModel], LoadedModel]:
    """What the watcher runs on a serving model every `serving.dimensions_refresh_seconds`: the
    same model when its tables' landing files have not changed, else a copy looking up the new
    ones (checked on its own example rows first). Its compiled scorer is kept: it scores the
    feature rows the lookups give, whichever tables they came from."""

    def refresh(model: LoadedModel) -> LoadedModel:
        if model.record is None:
            return model
        record = attach(model.record)
        if record.snapshots == model.record.snapshots:
            return model
        if model.landed_example is not None:
            record.features(model.landed_example)
        return replace(model, record=record)

    return refresh


def model_preparer(
    schema: FeatureSchema, attach: Callable[[RecordFeatures], RecordFeatures] | None = None
) -> Callable[[LoadedModel], LoadedModel]:
    """What the watcher runs on a newly loaded model before it swaps it in."""

    def prepare(model: LoadedModel) -> LoadedModel:
        if model.record is not None and attach is not None:
            try:
                model = replace(model, record=attach(model.record))
            except MlopsError as exc:
                raise MlopsError(f"{exc}; the version is not swapped in") from None
        if model.record is not None and model.landed_example is not None:
            model.record.features(model.landed_example)  # its lookups answer before it serves
        probe = schema.probe_rows(model.example)
        model.scores(probe)  # fails here, before the swap, if the model cannot score
        if model.objective.kind != "binary":  # the fast path computes p(positive) only
            return model
        return replace(model, fast=compile_scorer(model.pipeline, model.positive_index, probe))

    return prepare


def service_lifespan(
    config: ProjectConfig, schema: FeatureSchema, store: Store, own_process: bool
) -> Callable[[FastAPI], Any]:
    """Start-up (load the models, start the log writer and the scorer, put the `Service` in
    `app.state`) and shutdown, for FastAPI's `lifespan`."""
    settings = config.serving

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = RegistrySource(
            config.stack.tracking_uri,
            config.registry.experiment,
            config.registry.model_name,
            schema.columns,
            Objective.of(config),
        )
        attach = (
            landing_dimensions(config, Stores.from_config(config))
            if settings.dimensions == "landing"
            else None
        )
        watcher = ModelWatcher(
            registry,
            model_preparer(schema, attach),
            settings.poll_seconds,
            refresh=None if attach is None else dimension_refresher(attach),
            refresh_seconds=settings.dimensions_refresh_seconds,
        )
        await asyncio.to_thread(watcher.poll_once)  # load before the first request is accepted
        watcher.start()
        log = PredictionLog(
            store,
            log_schema(schema.numeric, schema.categorical, config.target.kind),
            settings.log_flush_rows,
            settings.log_flush_seconds,
            settings.log_max_buffered_rows,
        )
        log.start()
        scorer = Scorer(schema, watcher, settings, Objective.of(config), log)
        scorer.start()
        app.state.service = Service(config, schema, watcher, scorer, log)
        if own_process:
            # Move everything loaded so far out of the collector's sight: full collections then
            # skip the models and libraries, which otherwise cost milliseconds on large batches.
            gc.freeze()
        try:
            yield
        finally:
            watcher.stop()
            log.drain()  # the answered requests' rows must not wait for room behind a full log
            await scorer.stop()
            await asyncio.to_thread(log.close)

    return lifespan


async def unexpected(request: Request, exc: Exception) -> Response:
    logger.exception("unexpected error on %s %s", request.method, request.url.path)
    return json_response({"error": f"internal error ({type(exc).__name__}); see the service log"}, 500)


def _landed_schema(app: FastAPI) -> LandedSchema | None:
    service = getattr(app.state, "service", None)
    return service.landed_schema() if service is not None else None


def openapi_with_request_body(
    app: FastAPI, schema: FeatureSchema, landed: LandedSchema | None = None
) -> dict[str, Any]:
    """FastAPI's OpenAPI document plus the bodies of `/predict` and `/rank`: the body is decoded by hand
    (for speed and for precise errors), so FastAPI cannot see its schema; it comes from the
    same pydantic models that report errors. The form of records as they land comes from the
    loaded model's record step, so the document is rebuilt when that changes."""
    if app.openapi_schema is None or getattr(app.state, "openapi_landed", None) is not landed:
        spec = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        body_schema, definitions = schema.openapi_request_schema(SCHEMA_REF)
        if landed is not None:
            landed_schema = TypeAdapter(landed.request_model | list[landed.record_model])  # type: ignore[name-defined]
            landed_body = landed_schema.json_schema(ref_template=SCHEMA_REF)
            definitions |= landed_body.pop("$defs", {})
            body_schema = {"anyOf": [*body_schema.get("anyOf", [body_schema]), *landed_body["anyOf"]]}
        spec.setdefault("components", {}).setdefault("schemas", {}).update(definitions)
        spec["paths"]["/predict"]["post"]["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {"schema": body_schema},
                # the same records as columns, validated as strictly (serving.schema)
                ARROW_STREAM: {"schema": {"type": "string", "format": "binary"}},
            },
        }
        rank_schema, rank_definitions = schema.openapi_rank_schema(SCHEMA_REF)
        spec["components"]["schemas"].update(rank_definitions)
        spec["paths"]["/rank"]["post"]["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": rank_schema}},
        }
        app.openapi_schema = spec
        app.state.openapi_landed = landed
    return app.openapi_schema


def tune_process_for_serving() -> None:
    """Process-wide settings for a process that only serves (not applied by `create_app`,
    which the tests run inside pytest)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per registry poll otherwise
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # no bars in a server log
    # scikit-learn copies every active warning filter into each tree's job at predict time;
    # with the dozen filters the libraries install, that was a third of the cost of scoring
    # a small batch with a 60-tree forest (4.2 ms -> 2.9 ms, measured). A server has no one
    # to show a warning to per request anyway.
    warnings.resetwarnings()
    warnings.simplefilter("ignore")


def app_from_env() -> FastAPI:
    """The app for `uvicorn --factory` with several workers: each reads the config named
    by `MLOPS_CONFIG` (set by `mlops serve`)."""
    tune_process_for_serving()
    return create_app(load_config(os.environ.get("MLOPS_CONFIG", "mlops.yaml")), own_process=True)


def run_server(config: ProjectConfig, config_path: str, host: str, port: int, workers: int) -> None:
    """Serve until interrupted. Several workers are separate processes, each with its own models."""
    import uvicorn

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "access_log": False,  # a log line per request costs more than scoring one row
        "log_level": "info",
        "timeout_graceful_shutdown": 30,
        # Longer than clients keep idle connections (httpx 5 s, browsers and most pools more):
        # closing first races a request sent on the closing connection (a ReadError).
        "timeout_keep_alive": 75,
    }
    if workers == 1:
        tune_process_for_serving()
        uvicorn.run(create_app(config, own_process=True), **options)
    else:
        os.environ["MLOPS_CONFIG"] = config_path
        uvicorn.run("serving.app:app_from_env", factory=True, workers=workers, **options)
