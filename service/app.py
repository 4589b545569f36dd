"""The app factory: settings -> models loaded in the lifespan -> routes."""

from __future__ import annotations

import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers
from starlette.responses import Response

from service.api import errors, openapi, pages
from service.api.bounded import Drain
from service.api.middleware import RequestGuard
from service.api.schemas import ENDPOINT_BODY_BYTES
from service.api import v2
from service.api.routes import ROUTERS
from service.api.security import AccessControl
from service.config import Settings
from service.metrics import Metrics
from service.registry import ModelRegistry

log = logging.getLogger(__name__)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, but a refused preflight answers in the error shape of every other answer."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
        return errors.error_response(400, "cors_refused", response.body.decode(), headers=headers)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        registry = ModelRegistry(settings, metrics)
        app.state.registry = registry
        await registry.load_all()
        missing = registry.not_ready()
        if missing:
            log.warning("not ready: %s", missing)
        # What start-up built (modules, routes, schemas, models) lives as long as the process:
        # freezing it keeps the collector from scanning it again. Unfrozen, each full collection
        # took 40-70 ms with the GIL held, under a burst of requests (every thread waits: /healthz,
        # the step loops).
        gc.collect()
        gc.freeze()
        yield
        app.state.drain.draining = True
        await registry.close()
        gc.unfreeze()  # an app made again in this process (tests) must not leave this one frozen

    app = FastAPI(
        title="seqserve",
        version="0.1.0",
        summary="LSTM sequence models (sentiment, music, translation) served with ONNX Runtime.",
        lifespan=lifespan,
        docs_url=None, redoc_url=None,  # pages.install serves both, with their assets from the service
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.drain = Drain()  # the server calls app.state.drain.begin(grace) on SIGTERM
    for router in ROUTERS:
        app.include_router(router)
    pages.install(app)  # the playground at /, /docs, /redoc and /static: no request to another host
    openapi.install(app, settings)
    app.include_router(v2.router)  # the Open Inference Protocol, on the same models and batchers
    errors.install(app, settings.retry_after_s)
    known = {route.path for router in ROUTERS for route in router.routes} | pages.DOCS_PATHS | {"/openapi.json"}
    # Outermost last: request id, metrics and the access log see every answer, 401 and 429
    # included; CORS preflights pass before the key check.
    app.add_middleware(AccessControl, api_keys=settings.api_keys, metrics_open=settings.metrics_open,
                       rate_limit_per_minute=settings.rate_limit_per_minute)
    if settings.cors_origins:
        app.add_middleware(JsonCORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(RequestGuard, metrics=metrics, max_body_bytes=settings.max_body_bytes, known_paths=known,
                       endpoint_body_bytes=ENDPOINT_BODY_BYTES)
    return app
