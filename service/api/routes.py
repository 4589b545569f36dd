"""The endpoints of docs/api.md: each translates HTTP to a call on its task's model and back."""

from __future__ import annotations

import json
import logging
import time

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.api import schemas
from service.api.bounded import bounded, bounded_stream
from service.errors import ClientDisconnected, RequestTimeout, ShuttingDown
from service.api.deps import Client, Music, Registry, Sentiment, Translate
from service.request_log import note
from service.tasks.music import Composition, MusicModel

router = APIRouter()
log = logging.getLogger(__name__)

_ERROR = {"model": schemas.ErrorBody}
ERRORS = {
    413: _ERROR | {"description": "request body too large"},
    422: _ERROR | {"description": "the body breaks the schema (`fields` says where), or the request alone is more "
                                  "work than the request timeout allows (`too_much_work`)"},
    429: _ERROR | {"description": "this client has too much work in flight (`client_busy`) or is over its rate "
                                  "limit; see Retry-After"},
    503: _ERROR | {"description": "queue full, work ahead past the deadline, timeout, shutting down or model not "
                                  "ready; see Retry-After"},
}


def _result(prediction) -> schemas.SentimentResult:
    return schemas.SentimentResult(label=prediction.label, score=prediction.score,
                                   probabilities=schemas.SentimentProbabilities(**prediction.probabilities))


@router.post("/sentiment", tags=["tasks"], responses=ERRORS,
             response_model=schemas.SentimentResponse | schemas.SentimentBatchResponse,
             summary="Positive or negative, for one review (`text`) or up to 64 (`texts`)")
async def sentiment(request: Request, body: schemas.SentimentRequest, model: Sentiment, client: Client):
    texts = [body.text] if body.text is not None else body.texts
    predictions = await bounded(request, model.classify(texts, client), model.settings.request_timeout_s)
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
async def translate(request: Request, body: schemas.TranslateRequest, model: Translate, client: Client):
    texts = [body.text] if body.text is not None else body.texts
    results = await bounded(request, model.translate(texts, body.beam_size, body.max_length, client),
                            model.settings.request_timeout_s)
    answers = [_translation(result, body.return_attention) for result in results]
    if body.text is not None:
        return schemas.TranslateResponse(**answers[0].model_dump(), model=model.manifest.id)
    return schemas.TranslateBatchResponse(results=answers, model=model.manifest.id)


async def _music_answer(model: MusicModel, composition: Composition, generated: list[str],
                        time_left_s: float) -> schemas.MusicResponse:
    abc = composition.prompt + "".join(generated)
    tunes = [schemas.Tune(abc=t.abc, title=t.title, valid=t.valid, reason=t.reason)
             for t in await model.check_tunes(abc, time_left_s)]
    return schemas.MusicResponse(abc=abc, tunes=tunes, seed=composition.seed, model=model.manifest.id,
                                 ignored_characters=composition.ignored)


def _event(name: str, data: dict) -> str:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.post("/generate-music", tags=["tasks"], responses={
    **ERRORS, 200: {"description": "the JSON answer, or with `stream` Server-Sent Events: `chunk` events "
                                   "`{\"text\": ...}` as characters are generated, then one `result` event "
                                   "carrying the same JSON as the non-streamed answer, or one `error` event "
                                   "(`timeout`, `shutting_down`, `internal_error`)",
                    "content": {"text/event-stream": {"example": 'event: chunk\ndata: {"text": "T:The "}\n\n'
                                                                'event: result\ndata: {"abc": "X:1\\nT:The ...", ...}\n\n'}}}},
             response_model=schemas.MusicResponse, summary="Write folk music in ABC notation")
async def generate_music(request: Request, body: schemas.MusicRequest, model: Music, client: Client):
    composition = model.compose(body.prompt, body.max_length, body.temperature, body.top_k, body.seed, client)
    timeout, started = model.settings.request_timeout_s, time.perf_counter()

    def time_left() -> float:
        """Of the request's deadline (0: none): the generation and the tune check share one."""
        return max(timeout - (time.perf_counter() - started), 0.001) if timeout else 0

    async def answer() -> schemas.MusicResponse:
        generated = [chunk async for chunk in composition.chunks]
        return await _music_answer(model, composition, generated, time_left())

    if not (body.stream or "text/event-stream" in request.headers.get("accept", "")):
        return await bounded(request, answer(), timeout)

    async def events():
        sent = []
        try:
            async for text in bounded_stream(request, composition.chunks, timeout):
                sent.append(text)
                yield _event("chunk", {"text": text})
            left = time_left()
            result = await bounded(request, _music_answer(model, composition, sent, left), left)
        except (RequestTimeout, ShuttingDown) as error:
            code = "timeout" if isinstance(error, RequestTimeout) else "shutting_down"
            note(stream_end=code)
            yield _event("error", {"error": code, "message": str(error)})
            return
        except ClientDisconnected:
            note(stream_end="client_gone")
            return
        except Exception as error:  # headers are sent: the failure travels as an event
            log.exception("music stream failed")
            note(stream_end="internal_error")
            yield _event("error", {"error": "internal_error", "message": f"generation failed: {type(error).__name__}"})
            return
        note(stream_end="result")
        yield _event("result", result.model_dump())

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/generate-music/midi", tags=["tasks"], response_class=Response,
             responses={200: {"content": {"audio/midi": {}}, "description": "a standard MIDI file"},
                        **ERRORS, 422: _ERROR | {"description": "the body breaks the schema, music21 cannot read "
                                                               "the tune, or it is too complex (`too_complex`)"}},
             summary="One tune in ABC (e.g. from `tunes[i].abc`) as a MIDI file")
async def abc_to_midi(request: Request, body: schemas.MidiRequest, model: Music) -> Response:
    try:
        data = await bounded(request, model.to_midi(body.abc), model.settings.request_timeout_s)
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


@router.get("/v1/models", tags=["operations"], response_model=schemas.ModelsResponse,
            summary="Each model: version, provider in use, signature, file hashes, test metrics")
async def list_models(registry: Registry) -> schemas.ModelsResponse:
    return schemas.ModelsResponse(models=[schemas.ModelInfo(**m.describe()) for m in registry.models.values()])


@router.get("/metrics", tags=["operations"], response_class=Response,
            responses={200: {"description": "Prometheus text format", "content": {CONTENT_TYPE_LATEST: {
                "example": '# TYPE seqserve_requests_total counter\n'
                           'seqserve_requests_total{endpoint="/sentiment",status="200"} 42.0\n'}}}},
            summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
