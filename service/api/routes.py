"""The endpoints of ../shared/API.md."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from seqserve.abc import check_tune, complete_tunes, to_midi
from service.api import schemas
from service.api.bounded import RequestTimeout, bounded
from service.api.deps import get_music_model, get_registry, get_sentiment_model, get_translate_model
from service.registry import ModelRegistry
from service.tasks.music import MusicModel
from service.tasks.sentiment import SentimentModel
from service.tasks.translate import TranslateModel

router = APIRouter()
log = logging.getLogger(__name__)

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
async def sentiment(request: Request, body: schemas.SentimentRequest,
                    model: Annotated[SentimentModel, Depends(get_sentiment_model)]):
    texts = [body.text] if body.text is not None else body.texts
    predictions = await bounded(request, model.classify(texts), model.settings.request_timeout_s)
    if body.text is not None:
        return schemas.SentimentResponse(**_result(predictions[0]).model_dump(), model=model.manifest.id)
    return schemas.SentimentBatchResponse(results=[_result(p) for p in predictions], model=model.manifest.id)


def _translation(result, return_attention: bool) -> schemas.TranslationResult:
    attention = result.attention.astype(float).round(5).tolist() if return_attention else None
    return schemas.TranslationResult(translation=result.translation, source_tokens=result.source_tokens,
                                     target_tokens=result.target_tokens, attention=attention,
                                     source_truncated=result.source_truncated)


@router.post("/translate", tags=["tasks"], responses=ERRORS,
             response_model=schemas.TranslateResponse | schemas.TranslateBatchResponse,
             summary="English to Spanish, for one text (`text`) or up to 32 (`texts`), greedy or beam search")
async def translate(request: Request, body: schemas.TranslateRequest,
                    model: Annotated[TranslateModel, Depends(get_translate_model)]):
    texts = [body.text] if body.text is not None else body.texts
    results = await bounded(request, model.translate(texts, body.beam_size, body.max_length),
                            model.settings.request_timeout_s)
    answers = [_translation(result, body.return_attention) for result in results]
    if body.text is not None:
        return schemas.TranslateResponse(**answers[0].model_dump(), model=model.manifest.id)
    return schemas.TranslateBatchResponse(results=answers, model=model.manifest.id)


async def _music_answer(abc: str, seed: int, model: MusicModel, ignored: list[str]) -> schemas.MusicResponse:
    tunes = []
    for tune in complete_tunes(abc):
        check = await asyncio.to_thread(check_tune, tune)  # music21 parsing takes a while
        tunes.append(schemas.Tune(abc=tune, title=check.title, valid=check.valid))
    return schemas.MusicResponse(abc=abc, tunes=tunes, seed=seed, model=model.manifest.id, ignored_characters=ignored)


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/generate-music", tags=["tasks"], responses={
    **ERRORS, 200: {"description": "the JSON answer, or with `stream` Server-Sent Events: `chunk` events "
                                   "`{\"text\": ...}` as characters are generated, then one `result` event "
                                   "carrying the same JSON as the non-streamed answer",
                    "content": {"text/event-stream": {"example": 'event: chunk\ndata: {"text": "T:The "}\n\n'
                                                                'event: result\ndata: {"abc": "X:1\\nT:The ...", ...}\n\n'}}}},
             response_model=schemas.MusicResponse, summary="Write folk music in ABC notation")
async def generate_music(request: Request, body: schemas.MusicRequest,
                         model: Annotated[MusicModel, Depends(get_music_model)]):
    if body.top_k is not None and body.top_k > len(model.vocabulary):
        raise RequestValidationError([{"loc": ("body", "top_k"), "type": "less_than_equal", "input": body.top_k,
                                       "msg": f"Input should be less than or equal to {len(model.vocabulary)} "
                                              "(the vocabulary size)"}])
    seed = body.seed if body.seed is not None else secrets.randbits(63)
    prompt, ignored = model.clean_prompt(body.prompt)
    chunks = model.generate(prompt, body.max_length, body.temperature, body.top_k, seed)
    timeout = model.settings.request_timeout_s
    if body.stream or "text/event-stream" in request.headers.get("accept", ""):
        async def events():
            generated, deadline = [], asyncio.get_running_loop().time() + (timeout or float("inf"))
            try:
                while True:
                    remaining = deadline - asyncio.get_running_loop().time()
                    try:
                        chunk = await asyncio.wait_for(anext(chunks), remaining if timeout else None)
                    except StopAsyncIteration:
                        break
                    except TimeoutError:
                        raise RequestTimeout(f"no answer within {timeout:g} s (request_timeout_s)") from None
                    generated.append(chunk)
                    yield _event("chunk", {"text": chunk})
                answer = await _music_answer(prompt + "".join(generated), seed, model, ignored)
            except RequestTimeout as error:
                await chunks.aclose()
                yield _event("error", {"error": "timeout", "message": str(error)})
                return
            except Exception as error:  # headers are sent: the failure travels as an event
                log.exception("music stream failed")
                yield _event("error", {"error": "internal_error", "message": f"generation failed: {type(error).__name__}"})
                return
            yield _event("result", answer.model_dump())

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    async def collect() -> list[str]:
        return [chunk async for chunk in chunks]

    generated = await bounded(request, collect(), timeout)
    return await _music_answer(prompt + "".join(generated), seed, model, ignored)


@router.post("/generate-music/midi", tags=["tasks"], response_class=Response,
             responses={200: {"content": {"audio/midi": {}}, "description": "a standard MIDI file"},
                        422: ERRORS[422]},
             summary="One tune in ABC (e.g. from `tunes[i].abc`) as a MIDI file")
async def abc_to_midi(body: schemas.MidiRequest) -> Response:
    try:
        data = await asyncio.to_thread(to_midi, body.abc)
    except ValueError as error:
        raise RequestValidationError([{"loc": ("body", "abc"), "type": "value_error", "msg": str(error),
                                       "input": None}]) from error
    return Response(data, media_type="audio/midi", headers={"Content-Disposition": 'attachment; filename="tune.mid"'})


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
