"""The endpoints of the prediction service: one handler each, sharing only the `Service`
that `serving.app` builds at start-up and keeps in `app.state`. `add_routes` puts them on
the app: `GET /health`, `GET /ready`, `GET /model`, `POST /predict`, `POST /rank`, and
the prediction web page at `/` (`serving.page`).

They are added to the app itself rather than through an included `APIRouter`: FastAPI
0.154 matches an included router's routes through an extra layer, which cost 10-25 us per
request in a micro-benchmark, a tenth of the framework's share of a one-row request.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from itertools import count
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from mlops.config import ProjectConfig, ServingConfig
from mlops.names import lineage_artifact_key
from mlops.record_features import NUMBER
from mlops.tracking import version_url
from serving.models import ModelWatcher
from serving.page import form_record, render_page
from serving.predlog import PredictionLog, PredictionLogFull
from serving.schema import FeatureSchema, InputError, LandedSchema, response_model
from serving.scoring import NoModelError, Scorer, UnscorableError

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


@dataclass
class Service:
    """What the endpoints share, built at start-up."""

    config: ProjectConfig
    schema: FeatureSchema
    watcher: ModelWatcher
    scorer: Scorer
    log: PredictionLog
    # Request ids: a random prefix per process and a counter. uuid4() per request cost more
    # than parsing a one-row body (urandom is a system call).
    id_prefix: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    id_counter: count = field(default_factory=count)

    _landed: tuple[Any, LandedSchema] | None = None

    def landed_schema(self) -> LandedSchema | None:
        """The contract of records as they land, from the answering model's record step
        (None while no loaded model has one); built again only when that step changes."""
        primary = self.watcher.models.primary
        record = primary.record if primary is not None else None
        if record is None:
            return None
        if self._landed is None or self._landed[0] is not record:
            self._landed = (record, LandedSchema(record))
        return self._landed[1]

    def request_id(self, given: str | None) -> str:
        """The caller's request id when it is a sane one, else a new one."""
        return (
            given if given and REQUEST_ID_RE.match(given) else f"{self.id_prefix}{next(self.id_counter):010x}"
        )


def service_of(request: Request) -> Service:
    return request.app.state.service


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


async def page(request: Request) -> Response:
    """The prediction web page: GET shows the form, POST (a submitted form) answers it."""
    service = service_of(request)
    config, schema = service.config, service.schema
    models = service.watcher.models
    primary = models.primary
    values: dict[str, Any] = {}
    answer: dict[str, Any] | None = None
    error: str | None = None
    status = 200
    # The form is a record as it lands when the model takes one (it looks up the rest), else
    # the feature row.
    landed = service.landed_schema()
    if landed is not None:
        numeric = [c for c, kind in landed.inputs.items() if kind == NUMBER]
        text = [c for c in landed.inputs if c not in numeric]
    else:
        numeric, text = schema.numeric, schema.categorical
    if request.method == "POST":
        body = await read_body(request, config.serving.max_body_bytes)
        values = form_record(body, numeric, text)
        request_id = service.request_id(None)
        try:
            parsed = schema.parse(json.dumps({"records": [values]}).encode(), 1, None, landed)
            scored = await service.scorer.score(request_id, parsed.records, None)
            answer = scored.predictions()[0]
        except (InputError, NoModelError, PredictionLogFull, UnscorableError) as exc:
            refused = refusal(exc, request_id, config.serving)  # the very answer the API gives
            status, error = refused.status_code, bytes(refused.body).decode()
    links: dict[str, str] = {}
    if primary is not None:
        name = config.registry.model_name
        links = {
            f"{name} v{primary.version} in MLflow": version_url(
                config.stack.tracking_uri, name, primary.version
            ),
            "its lineage (Prefect artifact)": f"{config.stack.ui_url}/artifacts/key/"
            + lineage_artifact_key(name, primary.version),
            "the API (OpenAPI)": "/docs",
        }
    text = render_page(
        title=f"{config.registry.model_name}: predict one record",
        model=primary,
        alias=models.primary_arm,
        numeric=numeric,
        categorical=text,
        values=values,
        answer=answer,
        error=error,
        links=links,
    )
    return HTMLResponse(text, status)


def add_routes(app: FastAPI, kind: str = "binary") -> None:
    app.add_api_route(
        "/",
        page,
        methods=["GET", "POST"],
        summary="A web page: one record in a form, its answer",
        include_in_schema=False,
    )
    app.add_api_route("/health", health, methods=["GET"], summary="The process answers")
    app.add_api_route(
        "/ready", ready, methods=["GET"], summary="A model is loaded and answering (503 until then)"
    )
    app.add_api_route(
        "/model",
        model,
        methods=["GET"],
        summary="What is served: versions, metrics, mode, reload state, prediction log",
    )
    app.add_api_route(
        "/predict",
        predict,
        methods=["POST"],
        summary="Score records: JSON records, MLflow dataframe_split JSON, or an Arrow IPC stream",
        response_model=response_model(kind),
        responses={
            400: {"description": "The body is not JSON (or not an Arrow IPC stream)"},
            413: {"description": "Too many bytes or records"},
            422: {"description": "A record does not match the schema: the field and the reason"},
            503: {"description": "No model is loaded yet, or the prediction log is full (Retry-After)"},
        },
    )
    app.add_api_route(
        "/rank",
        rank,
        methods=["POST"],
        summary="Rank records, best first: champion and challenger interleaved (serving.mode: interleave)",
        responses={
            400: {"description": "The body is not JSON"},
            413: {"description": "Too many bytes or records"},
            422: {
                "description": "No records, k out of range, a record without a key or with a duplicate key"
            },
            503: {"description": "No model is loaded yet, or the prediction log is full (Retry-After)"},
        },
    )


# -- status: is it up, is it ready, what does it serve -----------------------------------


async def health() -> Response:
    return json_response({"status": "ok"})


async def ready(request: Request) -> Response:
    service = service_of(request)
    model_name = service.config.registry.model_name
    models = service.watcher.models
    status = service.watcher.status
    problems = [f"loading {f.alias} v{f.version} failed: {f.error}" for f in status.failures.values()]
    if status.last_poll_error:
        problems.append(status.last_poll_error)
    if status.refresh_error:
        problems.append(status.refresh_error)
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
        payload["note"] = f"no champion yet: serving the challenger v{models.primary.version} as a fallback"
    return json_response(payload)


async def model(request: Request) -> Response:
    service = service_of(request)
    settings = service.config.serving
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
            "name": service.config.registry.model_name,
            "version": primary.version if primary else None,
            "alias": models.primary_arm if primary else None,
            "metrics": primary.metrics if primary else {},
            "threshold": service.config.training.threshold,
            "mode": mode,
            "configured_mode": settings.mode,
            "challenger_share": {
                "canary": service.scorer.canary_share(under_test and under_test.version),
                "ab": settings.ab_split,
            }.get(mode),
            "note": note,
            "models": service.watcher.describe(),
            "scoring": service.scorer.describe(),
            "prediction_log": service.log.describe(),
        }
    )


# -- scoring ------------------------------------------------------------------------------


def refusal(exc: Exception, request_id: str, settings: ServingConfig) -> Response:
    """The answer to a request the service cannot score, by what went wrong."""
    if isinstance(exc, InputError):
        return json_response({**exc.body(), "request_id": request_id}, exc.status, request_id)
    if isinstance(exc, PredictionLogFull):
        response = json_response({"error": str(exc), "request_id": request_id}, 503, request_id)
        response.headers["Retry-After"] = str(max(1, round(settings.log_flush_seconds)))
        return response
    if isinstance(exc, UnscorableError):
        message = f"the model cannot score the records of this request: {exc}"
        return json_response({"error": message, "request_id": request_id}, 422, request_id)
    return json_response({"error": str(exc), "request_id": request_id}, 503, request_id)  # NoModelError


async def rank(request: Request) -> Response:
    """`{"records": [...], "k": N}` → the top k records, each with the arm that placed it."""
    service = service_of(request)
    settings = service.config.serving
    request_id = service.request_id(request.headers.get(REQUEST_ID_HEADER))
    try:
        body = await read_body(request, settings.max_body_bytes)
        parsed, k = service.schema.parse_rank(body, settings.max_records)
        ranked = await service.scorer.rank(request_id, parsed.records, k)
    except (InputError, NoModelError, PredictionLogFull, UnscorableError) as exc:
        return refusal(exc, request_id, settings)
    except Exception as exc:  # the model refused records that passed the schema
        return refusal(UnscorableError(f"{type(exc).__name__}: {exc}"), request_id, settings)
    return json_response(
        {
            "request_id": request_id,
            "model_name": ranked.model_name,
            "mode": ranked.mode,
            "ranked": ranked.ranked(parsed.records),
        },
        request_id=request_id,
    )


async def predict(request: Request) -> Response:
    # The body is decoded by hand (for speed and for precise errors); `serving.app` adds
    # its schema to the OpenAPI document.
    service = service_of(request)
    settings = service.config.serving
    request_id = service.request_id(request.headers.get(REQUEST_ID_HEADER))
    try:
        body = await read_body(request, settings.max_body_bytes)
        parsed = service.schema.parse(
            body, settings.max_records, request.headers.get("content-type"), service.landed_schema()
        )
        scored = await service.scorer.score(
            request_id, parsed.records, request.headers.get(settings.routing_header)
        )
    except (InputError, NoModelError, PredictionLogFull, UnscorableError) as exc:
        return refusal(exc, request_id, settings)
    return json_response(
        {
            "request_id": request_id,
            "model_name": scored.model_name,
            "mode": scored.mode,
            "predictions": scored.predictions(),
        },
        request_id=request_id,
    )
