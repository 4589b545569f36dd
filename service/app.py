"""The app factory: settings -> models loaded in the lifespan -> routes."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from service.api import errors
from service.api.middleware import RequestGuard
from service.api.routes import router
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
    app.add_middleware(RequestGuard, metrics=metrics, max_body_bytes=settings.max_body_bytes, known_paths=known)
    return app
