"""POST /sentiment: texts to the sentiment model and its predictions back."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api import schemas
from service.api.bounded import bounded
from service.api.deps import KEYED, Client, Sentiment
from service.api.middleware import GuardedJSONRoute
from service.api.routes.common import BODY, KEYS, MODEL, errors

router = APIRouter(route_class=GuardedJSONRoute)


def _result(prediction) -> schemas.SentimentResult:
    return schemas.SentimentResult(label=prediction.label, score=prediction.score,
                                   probabilities=schemas.SentimentProbabilities(**prediction.probabilities))


@router.post("/sentiment", tags=["sentiment"], operation_id="classify_sentiment", dependencies=KEYED,
             responses=errors(*KEYS, *BODY, *MODEL),
             response_model=schemas.SentimentResponse | schemas.SentimentBatchResponse,
             summary="Positive or negative, for one review (`text`) or up to 64 (`texts`)")
async def sentiment(request: Request, body: schemas.SentimentRequest, model: Sentiment, client: Client):
    predictions = await bounded(request, model.classify(body.all_texts, client), model.settings.request_timeout_s)
    if body.text is not None:
        return schemas.SentimentResponse(**_result(predictions[0]).model_dump(), model=model.manifest.id)
    return schemas.SentimentBatchResponse(results=[_result(p) for p in predictions], model=model.manifest.id)
