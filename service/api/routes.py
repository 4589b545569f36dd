"""The endpoints of ../shared/API.md."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import schemas
from service.api.deps import get_registry, get_sentiment_model
from service.registry import ModelRegistry
from service.tasks.sentiment import SentimentModel

router = APIRouter()

ERRORS = {
    413: {"model": schemas.ErrorBody, "description": "request body too large"},
    422: {"model": schemas.ErrorBody, "description": "the body breaks the schema; `fields` says where"},
    503: {"model": schemas.ErrorBody, "description": "queue full or model not ready; see Retry-After"},
}


def _result(prediction) -> schemas.SentimentResult:
    return schemas.SentimentResult(label=prediction.label, score=prediction.score,
                                   probabilities=schemas.SentimentProbabilities(**prediction.probabilities))


@router.post("/sentiment", tags=["tasks"], responses=ERRORS,
             response_model=schemas.SentimentResponse | schemas.SentimentBatchResponse,
             summary="Positive or negative, for one review (`text`) or up to 64 (`texts`)")
async def sentiment(body: schemas.SentimentRequest,
                    model: Annotated[SentimentModel, Depends(get_sentiment_model)]):
    texts = [body.text] if body.text is not None else body.texts
    predictions = await model.classify(texts)
    if body.text is not None:
        return schemas.SentimentResponse(**_result(predictions[0]).model_dump(), model=model.manifest.id)
    return schemas.SentimentBatchResponse(results=[_result(p) for p in predictions], model=model.manifest.id)


@router.get("/healthz", tags=["operations"], response_model=schemas.HealthResponse,
            summary="200 while the process is alive")
async def healthz() -> schemas.HealthResponse:
    return schemas.HealthResponse(status="ok")


@router.get("/readyz", tags=["operations"], response_model=schemas.ReadinessResponse,
            responses={503: {"model": schemas.ReadinessResponse, "description": "names what is not ready"}},
            summary="200 only when every model is loaded and warmed up")
async def readyz(request: Request, registry: Annotated[ModelRegistry, Depends(get_registry)]):
    missing = registry.not_ready()
    models = {task: "ready" for task in registry.models if task not in missing} | missing
    if missing or getattr(request.app.state, "draining", False):
        body = schemas.ReadinessResponse(status="not ready", models=models)
        return JSONResponse(body.model_dump(), status_code=503,
                            headers={"Retry-After": str(registry.settings.retry_after_s)})
    return schemas.ReadinessResponse(status="ready", models=models)


@router.get("/v1/models", tags=["operations"], response_model=schemas.ModelsResponse,
            summary="Each model: version, provider in use, signature, file hashes, test metrics")
async def list_models(registry: Annotated[ModelRegistry, Depends(get_registry)]) -> schemas.ModelsResponse:
    return schemas.ModelsResponse(models=[schemas.ModelInfo(**m.describe()) for m in registry.models.values()])


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {
                "example": '# TYPE seqserve_requests_total counter\n'
                           'seqserve_requests_total{endpoint="/sentiment",status="200"} 42.0\n'}}}},
            summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
