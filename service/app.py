"""The app factory: settings -> models loaded in the lifespan -> routes."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from service.api import errors
from service.api.middleware import RequestGuard
from service.api.routes import router
from service.api.security import AccessControl
from service.config import Settings
from service.metrics import Metrics
from service.registry import ModelRegistry

log = logging.getLogger(__name__)


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
        yield
        app.state.draining = True
        await registry.close()

    app = FastAPI(
        title="seqserve",
        version="0.1.0",
        summary="LSTM sequence models (sentiment, music, translation) served with ONNX Runtime.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.include_router(router)
    errors.install(app, settings.retry_after_s)
    known = {route.path for route in router.routes} | {"/docs", "/openapi.json", "/redoc"}
    # Outermost last: request id, metrics and the access log see every answer, 401 and 429
    # included; CORS preflights pass before the key check.
    app.add_middleware(AccessControl, api_keys=settings.api_keys, metrics_open=settings.metrics_open,
                       rate_limit_per_minute=settings.rate_limit_per_minute)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type", "X-Request-ID"],
                           expose_headers=["X-Request-ID", "Retry-After"])
    app.add_middleware(RequestGuard, metrics=metrics, max_body_bytes=settings.max_body_bytes, known_paths=known)
    return app
