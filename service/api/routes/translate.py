"""POST /translate: texts to the translation model and its translations back."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.api import schemas
from service.api.bounded import bounded
from service.api.deps import KEYED, Client, Translate
from service.api.middleware import GuardedJSONRoute
from service.api.routes.common import BODY, KEYS, MODEL, errors

router = APIRouter(route_class=GuardedJSONRoute)


def _translation(result, return_attention: bool) -> schemas.TranslationResult:
    attention = result.attention.astype(float).round(5).tolist() if return_attention else None
    return schemas.TranslationResult(translation=result.translation, source_tokens=result.source_tokens,
                                     target_tokens=result.target_tokens, attention=attention,
                                     source_truncated=result.source_truncated)


@router.post("/translate", tags=["translation"], operation_id="translate", dependencies=KEYED,
             responses=errors(*KEYS, *BODY, *MODEL),
             response_model=schemas.TranslateResponse | schemas.TranslateBatchResponse,
             summary="English to Spanish, for one text (`text`) or up to 32 (`texts`), greedy or beam search")
async def translate(request: Request, body: schemas.TranslateRequest, model: Translate, client: Client):
    results = await bounded(request, model.translate(body.all_texts, body.beam_size, body.max_length, client),
                            model.settings.request_timeout_s)
    answers = [_translation(result, body.return_attention) for result in results]
    if body.text is not None:
        return schemas.TranslateResponse(**answers[0].model_dump(), model=model.manifest.id)
    return schemas.TranslateBatchResponse(results=answers, model=model.manifest.id)
