"""GET /healthz, /readyz, /v1/models, /metrics."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import schemas
from service.api.deps import KEYED, Registry
from service.api.errors import ErrorCode as E
from service.api.middleware import GuardedJSONRoute
from service.api.routes.common import HEADERS, KEYS, errors

router = APIRouter(route_class=GuardedJSONRoute)


@router.get("/healthz", tags=["operations"], operation_id="health", response_model=schemas.HealthResponse,
            responses=errors(E.internal_error),
            summary="200 while the process is alive")
async def healthz() -> schemas.HealthResponse:
    return schemas.HealthResponse(status="ok")


@router.get("/readyz", tags=["operations"], operation_id="readiness", response_model=schemas.ReadinessResponse,
            responses={**errors(E.internal_error),
                       503: {"model": schemas.ReadinessResponse, "description": "names what is not ready",
                             "headers": HEADERS[503]}},
            summary="200 only when every model is loaded and warmed up")
async def readyz(request: Request, registry: Registry):
    missing = registry.not_ready()
    models = {task: "ready" for task in registry.models if task not in missing} | missing
    if request.app.state.drain.draining:
        missing["server"] = models["server"] = "shutting down"
    if missing:
        body = schemas.ReadinessResponse(status="not ready", models=models)
        return JSONResponse(body.model_dump(), status_code=503,
                            headers={"Retry-After": str(registry.settings.retry_after_s)})
    return schemas.ReadinessResponse(status="ready", models=models)


@router.get("/v1/models", tags=["operations"], operation_id="list_models", dependencies=KEYED,
            responses=errors(*KEYS, E.internal_error), response_model=schemas.ModelsResponse,
            summary="Each model: version, provider in use, signature, file hashes, test metrics")
async def list_models(registry: Registry) -> schemas.ModelsResponse:
    return schemas.ModelsResponse(models=[schemas.ModelInfo(**m.describe()) for m in registry.models.values()])


@router.get("/metrics", tags=["operations"], operation_id="metrics", dependencies=KEYED, response_class=Response,
            responses={**errors(*KEYS, E.internal_error), 200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {
                "example": '# TYPE seqserve_requests_total counter\n'
                           'seqserve_requests_total{endpoint="/sentiment",status="200"} 42.0\n'}}}},
            summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
