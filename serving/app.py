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
request, and then follows the registry (see `serving.models`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import uuid
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from itertools import count
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response

from mlops.config import ProjectConfig, load_config
from mlops.prediction_log import log_schema
from mlops.storage import open_store
from serving.fastpath import compile_scorer
from serving.models import LoadedModel, ModelWatcher, RegistrySource
from serving.predlog import PredictionLog
from serving.schema import FeatureSchema, InputError, PredictResponse
from serving.scoring import NoModelError, Scorer, UnscorableError

logger = logging.getLogger("serving.app")
REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
SCHEMA_REF = "#/components/schemas/{model}"


def json_response(payload: Any, status: int = 200, request_id: str | None = None) -> Response:
    headers = {REQUEST_ID_HEADER: request_id} if request_id else None
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json", headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InputError(400, f"Content-Length {declared!r} is not a number")
        if int(declared) > limit:
            raise InputError(
                413, f"the body has {int(declared)} bytes, over the limit of {limit} (serving.max_body_bytes)"
            )
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise InputError(413, f"the body exceeds the limit of {limit} bytes (serving.max_body_bytes)")
        parts.append(part)
    return b"".join(parts)


@dataclass
class Service:
    """What the endpoints share, built at start-up."""

    config: ProjectConfig
    schema: FeatureSchema
    watcher: ModelWatcher
    scorer: Scorer
    log: PredictionLog


def create_app(config: ProjectConfig, own_process: bool = False) -> FastAPI:
    """The service for one config, serving from the MLflow registry of `config.stack`.
    `own_process` lets it tune the garbage collector of a process that does nothing else."""
    settings = config.serving
    schema = FeatureSchema(config.features)  # a bad feature list fails here, before serving
    model_name = config.registry.model_name
    store = open_store(config.store_uri(settings.prediction_log_uri), config.data.s3)

    def prepare(model: LoadedModel) -> LoadedModel:
        probe = schema.probe_rows(model.example)
        model.scores(probe)  # fails here, before the swap, if the model cannot score
        return replace(model, fast=compile_scorer(model.pipeline, model.positive_index, probe))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = RegistrySource(
            config.stack.tracking_uri, config.registry.experiment, model_name, schema.columns
        )
        watcher = ModelWatcher(registry, prepare, settings.poll_seconds)
        await asyncio.to_thread(watcher.poll_once)  # load before the first request is accepted
        watcher.start()
        log = PredictionLog(
            store,
            log_schema(schema.numeric, schema.categorical),
            settings.log_flush_rows,
            settings.log_flush_seconds,
        )
        log.start()
        scorer = Scorer(schema, watcher, settings, config.training.threshold, log)
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
            await scorer.stop()
            await asyncio.to_thread(log.close)

    app = FastAPI(
        title=f"{config.project} prediction service",
        description=(
            f"Scores records with `{model_name}@champion` from the MLflow registry "
            f"(mode: {settings.mode}). Every prediction is logged to {settings.prediction_log_uri}."
        ),
        version="1",
        lifespan=lifespan,
    )

    # Request ids: a random prefix per process and a counter. uuid4() per request cost more
    # than parsing a one-row body (urandom is a system call).
    id_prefix = uuid.uuid4().hex[:12]
    id_counter = count()

    def service_of(request: Request) -> Service:
        return request.app.state.service

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return json_response({"error": f"internal error ({type(exc).__name__}); see the service log"}, 500)

    @app.get("/health", summary="The process answers")
    async def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/ready", summary="A model is loaded and answering (503 until then)")
    async def ready(request: Request) -> Response:
        service = service_of(request)
        models = service.watcher.models
        status = service.watcher.status
        problems = [f"loading {f.alias} v{f.version} failed: {f.error}" for f in status.failures.values()]
        if status.last_poll_error:
            problems.append(status.last_poll_error)
        if models.primary is None:
            return json_response(
                {
                    "ready": False,
                    "reason": f"no model loaded: the registry has no loadable `champion` or `challenger`"
                    f" alias for {model_name}",
                    "problems": problems,
                },
                503,
            )
        payload: dict[str, Any] = {
            "ready": True,
            "model_name": model_name,
            "model_version": models.primary.version,
            "alias": models.primary_arm,
            "problems": problems,
        }
        if models.champion is None:
            payload["note"] = (
                f"no champion yet: serving the challenger v{models.primary.version} as a fallback"
            )
        return json_response(payload)

    @app.get("/model", summary="What is served: versions, metrics, mode, reload state, prediction log")
    async def model(request: Request) -> Response:
        service = service_of(request)
        models = service.watcher.models
        primary = models.primary
        under_test = models.under_test
        mode = settings.mode if under_test is not None else "none"
        if primary is None:
            note = "no model loaded"
        elif models.champion is None:
            note = f"no champion yet: the challenger v{primary.version} answers as a fallback"
        elif settings.mode != "none" and under_test is None:
            note = f"mode {settings.mode} is configured, but there is no separate challenger: champion only"
        else:
            note = None
        return json_response(
            {
                "name": model_name,
                "version": primary.version if primary else None,
                "alias": models.primary_arm if primary else None,
                "metrics": primary.metrics if primary else {},
                "threshold": config.training.threshold,
                "mode": mode,
                "configured_mode": settings.mode,
                "challenger_share": {"canary": settings.canary_share, "ab": settings.ab_split}.get(mode),
                "note": note,
                "models": service.watcher.describe(),
                "scoring": service.scorer.describe(),
                "prediction_log": service.log.describe(),
            }
        )

    @app.post(
        "/predict",
        summary="Score records",
        response_model=PredictResponse,
        responses={
            400: {"description": "The body is not JSON"},
            413: {"description": "Too many bytes or records"},
            422: {"description": "A record does not match the schema: the field and the reason"},
            503: {"description": "No model is loaded yet"},
        },
    )
    async def predict(request: Request) -> Response:
        service = service_of(request)
        given = request.headers.get(REQUEST_ID_HEADER)
        request_id = given if given and REQUEST_ID_RE.match(given) else f"{id_prefix}{next(id_counter):010x}"
        try:
            body = await read_body(request, settings.max_body_bytes)
            parsed = service.schema.parse(body, settings.max_records)
            scored = await service.scorer.score(
                request_id, parsed.records, request.headers.get(settings.routing_header)
            )
        except InputError as exc:
            return json_response({**exc.body(), "request_id": request_id}, exc.status, request_id)
        except NoModelError as exc:
            return json_response({"error": str(exc), "request_id": request_id}, 503, request_id)
        except UnscorableError as exc:
            message = f"the model cannot score the records of this request: {exc}"
            return json_response({"error": message, "request_id": request_id}, 422, request_id)
        return json_response(
            {
                "request_id": request_id,
                "model_name": scored.model_name,
                "mode": scored.mode,
                "predictions": scored.predictions(),
            },
            request_id=request_id,
        )

    def openapi() -> dict[str, Any]:
        # The body is decoded by hand (for speed and for precise errors), so FastAPI cannot
        # see its schema: add it here, from the same pydantic models that report errors.
        if app.openapi_schema is None:
            spec = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            body_schema, definitions = schema.openapi_request_schema(SCHEMA_REF)
            spec.setdefault("components", {}).setdefault("schemas", {}).update(definitions)
            spec["paths"]["/predict"]["post"]["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": body_schema}},
            }
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


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
