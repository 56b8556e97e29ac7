"""The REST service: FastAPI routes, startup (load and warm the model once) and ``run`` (``vinted-serve``).

The model is classifiers.predict.Tagger, the same object `classify predict` uses; this module adds only what
HTTP needs: uploads, micro-batching, response schemas, warm-up, readiness.

    POST /v1/predict   images -> category top-2 and top-k probabilities, tag scores/thresholds/decisions
    GET  /v1/model     encoder, classes, tags, thresholds, training fingerprint
    GET  /v1/stats     encoder calls and images so far (how well micro-batching works), images in flight
    GET  /metrics      Prometheus metrics (service/metrics.py): traffic, latency, batching, failures, predictions
    GET  /healthz      the process answers (HEAD too);  GET /readyz  the model is loaded and warm (503 before)
    GET  /             the seller page (service/page.py, service/static/), which calls POST /v1/predict
    GET  /docs, /redoc the API docs, with Swagger UI's and ReDoc's assets served locally (fastapi-offline)
"""

from __future__ import annotations

import asyncio
import copy
import errno
import functools
import logging
import os
import socket
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST

from classifiers.artifacts import default_model_dir
from embed.images import ImageError
from service.batcher import Batcher
from service.errors import ApiError, image_error, install_handlers
from service.metrics import Metrics
from service.middleware import RequestContext
from service.page import add_page
from service.schemas import (
    ErrorDetail,
    ErrorResponse,
    Health,
    ImageFailure,
    ModelInfo,
    PredictResponse,
    Readiness,
    Stats,
    image_prediction,
    model_info_of,
)
from service.settings import Settings
from service.tuning import measure
from service.uploads import Upload, decode_work, read_uploads
from vinted_tagger import __version__
from vinted_tagger.errors import UserError

log = logging.getLogger("service")
router = APIRouter()

ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 415, 422, 500, 503)}
ERRORS[503]["description"] = "not ready, shutting down, or overloaded (the whole request; see Retry-After)"
# The body is read by hand (streamed, with limits), so its two accepted forms are documented here.
PREDICT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {"files": {"type": "array", "minItems": 1,
                                             "items": {"type": "string", "format": "binary"}}},
                }
            },
            "image/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def create_app(model_dir: str | Path | None = None, settings: Settings | None = None) -> FastAPI:
    # FastAPIOffline: /docs and /redoc load Swagger UI and ReDoc from the package, not from a CDN.
    app = FastAPIOffline(
        title="vinted-tagger",
        summary="Top-2 category and pattern tags for clothing photos.",
        version=__version__,
        lifespan=lifespan,
        swagger_ui_parameters={"validatorUrl": None},  # no call to the online spec validator
    )
    app.state.settings = settings or Settings.from_env()
    app.state.model_dir = Path(model_dir) if model_dir else default_model_dir()
    app.state.tagger = app.state.batcher = app.state.model_info = None
    app.state.metrics = Metrics()
    install_handlers(app)
    app.add_middleware(RequestContext, metrics=app.state.metrics)
    app.include_router(router)
    add_page(app)
    app.openapi = functools.partial(openapi_with_limits, app)
    return app


def openapi_with_limits(app: FastAPI) -> dict:
    """The generated schema, plus this app's own limit on the number of files (a setting)."""
    if app.openapi_schema is None:
        schema = copy.deepcopy(FastAPI.openapi(app))  # PREDICT_BODY is shared by every app: never edit it
        body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]
        body["schema"]["properties"]["files"]["maxItems"] = app.state.settings.max_files
        app.openapi_schema = schema
    return app.openapi_schema


@asynccontextmanager
async def lifespan(app: FastAPI):
    from classifiers.predict import Tagger  # heavy imports (onnxruntime, heads) only when serving

    settings: Settings = app.state.settings
    tagger = await asyncio.to_thread(Tagger.load, app.state.model_dir)
    # Static shapes: one image (the low-latency path) and, unless max_batch is 1, the throughput path's.
    batches = tuple(range(1, max(settings.max_batch or AUTO_BATCH_LIMIT, 2) + 1))
    await asyncio.to_thread(tagger.load_encoder, settings.runtime, settings.precision, settings.encoder_workers or 1,
                            settings.encoder_threads or None, batches)
    await asyncio.to_thread(tagger.warm)
    encoder = tagger.encoder()
    # Auto: one session, one worker per lane (stream) of it; else that many sessions, each taking whole batches.
    lanes = encoder.lanes if settings.encoder_workers == 0 else 0
    tuning = await asyncio.to_thread(measure, encoder, getattr(encoder.runner, "full", 0), settings.max_batch,
                                     settings.batch_window_ms, lanes)
    metrics: Metrics = app.state.metrics
    batcher = Batcher(
        tagger.pixels,
        functools.partial(score_batch, tagger, lanes > 1),
        max_batch=min(tuning.max_batch, settings.max_pending),
        window_s=tuning.window_s,
        max_pending=settings.max_pending,
        decode_threads=settings.decode_threads or os.cpu_count() or 1,
        workers=max(lanes, settings.encoder_workers),
        inspect=functools.partial(decode_work, size=encoder.spec.input_size, limits=settings.decode_limits),
        heavy_work=settings.heavy_decode_work,
        heavy_decodes=settings.heavy_decodes,
        max_heavy_pending=settings.max_heavy_pending,
        on_batch=metrics.batch,
    )
    batcher.start()
    info = model_info_of(tagger)
    metrics.start(batcher, model_labels(info, encoder, tuning), list(tagger.classes), list(tagger.tags))
    app.state.tagger, app.state.batcher, app.state.model_info = tagger, batcher, info
    log.info("model %s ready from %s", tagger.model_id, app.state.model_dir)
    try:
        yield
    finally:
        app.state.tagger = None  # /readyz answers 503 while draining
        await batcher.stop()


AUTO_BATCH_LIMIT = 64  # with max_batch auto: the largest batch the encoder is prepared for (it measures up to 32)


def model_labels(info: ModelInfo, encoder, tuning) -> dict[str, str]:
    """The info metric's labels: what is served, and the batching limits measured at start-up."""
    return {"model_id": info.model_id, "encoder": info.encoder.name, "variant": encoder.variant.name,
            "ran_precision": str(encoder.record.get("ran_precision")), "max_batch": str(tuning.max_batch),
            "lanes": str(tuning.lanes),
            "batch_window_ms": f"{tuning.window_s * 1000:.2f}", "encoder_batch1_ms": f"{tuning.batch1_ms:.2f}"}


def score_batch(tagger, on_lanes: bool, pixels, lane: int | None):
    """uint8 (n, S, S, 3) -> per image (category probabilities, tag scores), on the worker's own lane (when
    ``on_lanes``) or on a session of its own. Runs in a worker thread."""
    return list(zip(*tagger.score_pixels(pixels, lane if on_lanes else None)))


async def ready_tagger(request: Request):
    """The loaded model (classifiers.predict.Tagger): the routes' dependency; 503 until it is loaded and warm.
    ``async``: FastAPI runs a plain ``def`` dependency in a worker thread, a thread hop on every request."""
    tagger = request.app.state.tagger
    if tagger is None:
        raise ApiError(503, "not_ready", "the model is not loaded yet", {"Retry-After": "1"})
    return tagger


ReadyTagger = Annotated[Any, Depends(ready_tagger)]


@router.get("/healthz", response_model=Health, tags=["health"])
async def healthz() -> Health:
    return Health()


@router.head("/healthz", include_in_schema=False)  # load balancers and monitors probe with HEAD
async def healthz_head() -> Response:
    return Response(status_code=200, media_type="application/json")


@router.get("/readyz", response_model=Readiness, responses={503: {"model": ErrorResponse}}, tags=["health"])
async def readyz(tagger: ReadyTagger) -> Readiness:
    return Readiness(status="ready", model_id=tagger.model_id)


@router.get("/v1/model", response_model=ModelInfo, responses={503: {"model": ErrorResponse}}, tags=["model"],
            dependencies=[Depends(ready_tagger)])
async def model_info(request: Request) -> ModelInfo:
    return request.app.state.model_info


@router.get("/v1/stats", response_model=Stats, responses={503: {"model": ErrorResponse}}, tags=["model"],
            dependencies=[Depends(ready_tagger)])
async def stats(request: Request) -> Stats:
    batcher = request.app.state.batcher
    mean = batcher.batched_images / batcher.batches if batcher.batches else 0.0
    return Stats(batches=batcher.batches, images=batcher.batched_images, mean_batch=mean, pending=batcher.pending)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition (before the model is ready too: traffic and 503s show from the start)."""
    # Rendered in a thread: the event loop keeps answering predictions while the text is built.
    return Response(await asyncio.to_thread(request.app.state.metrics.render), media_type=CONTENT_TYPE_LATEST)


@router.post(
    "/v1/predict", response_model=PredictResponse, responses=ERRORS, openapi_extra=PREDICT_BODY, tags=["model"]
)
async def predict(
    request: Request,
    tagger: ReadyTagger,
    k: int = Query(5, ge=1, le=100, description="how many category probabilities to return (at most the classes)"),
) -> Response:
    """Predict every image of the request: multipart field ``files`` (one or more), or one raw image body.

    With several images, a bad one gets its own ``status: "error"`` entry and the others are answered;
    a request with a single image answers that image's error as the HTTP status (400/413/422).
    """
    uploads = await read_uploads(request, request.app.state.settings)
    request.state.images = len(uploads)
    k = min(k, len(tagger.classes))
    batcher: Batcher = request.app.state.batcher
    request.state.tagger = tagger  # the model this request started with, even if shutdown unsets app.state's
    # Every image's decode cost from its header, then the request is admitted whole or refused whole (503).
    costs = await batcher.costs([u.data for u in uploads if u.error is None])
    by_upload = iter(costs)
    jobs = [(u, next(by_upload) if u.error is None else None) for u in uploads]
    with batcher.admission([c for _, c in jobs if isinstance(c, int)]):
        if len(jobs) == 1:
            results = [await predict_one(request, *jobs[0], 0, k)]
        else:
            results = await asyncio.gather(*(predict_item(request, u, c, i, k) for i, (u, c) in enumerate(jobs)))
    # Dumped once, here: returned as a model, FastAPI would validate it again before dumping it
    # (response_model still documents it).
    body = PredictResponse(model_id=tagger.model_id, results=results).model_dump_json()
    return Response(body, media_type="application/json")


async def predict_one(request: Request, upload: Upload, cost, index: int, k: int):
    if upload.error is not None:
        raise upload.error
    try:
        if isinstance(cost, ImageError):  # its header alone showed it unusable or over the decode budget
            raise cost
        row = await request.app.state.batcher.run_image(upload.data, cost)
    except ImageError as error:
        request.app.state.metrics.decode_failures.labels(error.code).inc()
        raise image_error(error) from None
    described = request.state.tagger.describe(*row)
    request.app.state.metrics.prediction(described)
    return image_prediction(described, k, index, upload.filename)


async def predict_item(request: Request, upload: Upload, cost, index: int, k: int):
    """predict_one, with a client-side problem turned into this item's error entry."""
    try:
        return await predict_one(request, upload, cost, index, k)
    except ApiError as error:
        detail = ErrorDetail(code=error.code, message=error.message)
        return ImageFailure(index=index, filename=upload.filename, error=detail)


def configure_logging(level: str = "info") -> None:
    """Plain lines for the service's own logs, bare JSON lines for the access log (one per request)."""
    level_no = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(level=level_no, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    access = logging.getLogger("service.access")
    if not access.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False


def run(
    model_dir: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    settings: Settings | None = None,
    log_level: str = "info",
) -> None:
    """Serve until interrupted (``vinted-serve``, ``python -m service``)."""
    import uvicorn

    from classifiers.predict import Tagger

    # A busy port, a missing or bad model, or an encoder not built here is one clear line now, before any
    # model loads, never a service that fails on startup.
    listener = listen(host, port)
    try:
        model_dir = Path(model_dir) if model_dir else default_model_dir()
        Tagger.load(model_dir).check_encoder()
        settings = settings or Settings.from_env()
        configure_logging(log_level)
        app = create_app(model_dir, settings)
        # log_config=None keeps the logging set up above; the access line comes from RequestContext. On SIGTERM
        # uvicorn stops accepting, then cuts off what is still open after shutdown_timeout_s (a slow client).
        config = uvicorn.Config(app, host=host, port=listener.getsockname()[1], log_config=None, log_level=log_level,
                                access_log=False, timeout_graceful_shutdown=settings.shutdown_timeout_s)
        uvicorn.Server(config).run(sockets=[listener])
    finally:
        listener.close()


def listen(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now: a port in use is a user's mistake, said in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: restarts need no wait
    try:
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} on {host} is already in use (another server?); choose another with "
                            "--port") from None
        raise UserError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    listener.set_inheritable(True)
    return listener
