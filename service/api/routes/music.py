"""POST /generate-music (JSON or Server-Sent Events) and POST /generate-music/midi."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import aclosing
from typing import TypeVar

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse

from service.api import schemas
from service.api.bounded import bounded, bounded_stream
from service.api.deps import KEYED, Client, Music
from service.api.errors import ErrorCode as E
from service.api.middleware import GuardedJSONRoute
from service.api.routes.common import BODY, KEYS, MODEL, errors
from service.errors import ClientDisconnected, RequestTimeout, ShuttingDown
from service.request_log import note
from service.tasks.music import Composition, MusicModel, TuneEnd

router = APIRouter(route_class=GuardedJSONRoute)
log = logging.getLogger(__name__)
T = TypeVar("T")


KEEPALIVE_S = 15.0  # an SSE comment after this long without an event, so proxies keep the stream open
KEEPALIVE = ": keep-alive\n\n"


def finish_reason(text: str, stop_at_end_of_tune: bool) -> str:
    """Why a generation that wrote `text` (prompt + generated) stopped."""
    return "end_of_tune" if stop_at_end_of_tune and TuneEnd(text).ended else "length"


async def _music_answer(model: MusicModel, composition: Composition, generated: list[str],
                        time_left_s: float, stop_at_end_of_tune: bool) -> schemas.MusicResponse:
    abc = composition.prompt + "".join(generated)
    tunes = [schemas.Tune(abc=t.abc, title=t.title, valid=t.valid, reason=t.reason)
             for t in await model.check_tunes(abc, time_left_s)]
    return schemas.MusicResponse(abc=abc, tunes=tunes, seed=composition.seed, model=model.manifest.id,
                                 ignored_characters=composition.ignored,
                                 finish_reason=finish_reason(abc, stop_at_end_of_tune))


def prefers_event_stream(accept: str | None) -> bool:
    """Content negotiation (RFC 9110, 12.5.1) between the two answers of /generate-music: Server-
    Sent Events only when the Accept header gives text/event-stream a higher quality than
    application/json, each weighed by the most specific range that matches it (`text/*`,
    `*/*`); a tie, no header or a malformed one is JSON, the default."""
    if not accept:
        return False
    ranges: list[tuple[str, float]] = []
    for part in accept.split(","):
        media, *parameters = (piece.strip() for piece in part.split(";"))
        quality = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = min(max(float(value), 0.0), 1.0)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((media.lower(), quality))

    def quality_of(media_type: str) -> float:
        kind = media_type.split("/")[0]
        best = (-1, 0.0)  # (specificity, quality)
        for media, quality in ranges:
            specificity = {media_type: 2, f"{kind}/*": 1, "*/*": 0}.get(media, -1)
            if specificity > best[0]:
                best = (specificity, quality)
        return best[1]

    events = quality_of("text/event-stream")
    return events > 0 and events > quality_of("application/json")


async def with_keepalive(items: AsyncIterator[T], interval_s: float) -> AsyncIterator[T | None]:
    """The items, and None each time `interval_s` passes without one (the waiting is not
    cancelled: the next item still comes). Closing this closes `items`."""
    step: asyncio.Future | None = None
    try:
        while True:
            step = step or asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({step}, timeout=interval_s)
            if not done:
                yield None
                continue
            finished, step = step, None
            try:
                item = finished.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if step is not None:
            step.cancel()
            await asyncio.gather(step, return_exceptions=True)
        await items.aclose()


async def _one(work: Awaitable[T]) -> AsyncIterator[T]:
    yield await work


def _event_schema(name: str, data: str) -> dict:
    return {"type": "object", "title": f"{name} event", "required": ["id", "event", "data"], "properties": {
        "id": {"type": "string", "pattern": "^[0-9]+$", "description": "0, 1, 2, ... in the order sent"},
        "event": {"const": name},
        "data": {"type": "string", "contentMediaType": "application/json",
                 "contentSchema": {"$ref": f"#/components/schemas/{data}"}}}}


def _stream_docs() -> dict:
    """The 200 answer of /generate-music: JSON, or the event stream, described event by event."""
    example = ('id: 0\nevent: chunk\ndata: {"text": "X:1\\n"}\n\n'
               'id: 1\nevent: chunk\ndata: {"text": "T:The Humours of Ballyconnell\\nM:6/8\\nL:1/8\\nK:D\\nA|dfe"}\n\n'
               ': keep-alive\n\n'
               'id: 2\nevent: result\ndata: {"abc": "X:1\\nT:The Humours of ...", "tunes": [...], '
               '"finish_reason": "end_of_tune", ...}\n\n')
    return {200: {
        "description": "JSON (`MusicResponse`), or, when the request asks for it (`\"stream\": true`, or an Accept "
                       "header that prefers text/event-stream), Server-Sent Events. Every event has an `id:` (0, 1, "
                       "...), an `event:` and one `data:` line of JSON: `chunk` events (`MusicChunk`: the prompt as "
                       "the model reads it, then the generated text in pieces of 32 characters; the chunks joined "
                       "are the result's `abc`), then exactly one of `result` (`MusicResponse`, the same JSON as the "
                       "plain answer, with `finish_reason`) or `error` (`MusicStreamError`: the status line was "
                       "already sent as 200). A comment line `: keep-alive` comes after 15 s without an event.",
        "content": {"text/event-stream": {
            # Each event, read as {"event", "id", "data"} (how OpenAPI 3.2's itemSchema, and tools
            # before it such as schemathesis, read a text/event-stream schema); `data` is JSON.
            "schema": {"description": "one event of the stream (comments, such as `: keep-alive`, are not events)",
                       "oneOf": [_event_schema("chunk", "MusicChunk"), _event_schema("result", "MusicResponse"),
                                 _event_schema("error", "MusicStreamError")]},
            "example": example}}}}


@router.post("/generate-music", tags=["music"], operation_id="generate_music", dependencies=KEYED,
             responses={**errors(*KEYS, *BODY, *MODEL), **_stream_docs()},
             response_model=schemas.MusicResponse, summary="Write folk music in ABC notation (JSON, or streamed)")
async def generate_music(request: Request, body: schemas.MusicRequest, model: Music, client: Client):
    composition = model.compose(body.prompt, body.max_length, body.temperature, body.top_k, body.seed, client,
                                stop_at_end_of_tune=body.stop_at_end_of_tune)
    timeout, started = model.settings.request_timeout_s, time.perf_counter()
    stop = body.stop_at_end_of_tune

    def time_left() -> float:
        """Of the request's deadline (0: none): the generation and the tune check share one."""
        return max(timeout - (time.perf_counter() - started), 0.001) if timeout else 0

    async def answer() -> schemas.MusicResponse:
        generated = [chunk async for chunk in composition.chunks]
        return await _music_answer(model, composition, generated, time_left(), stop)

    streamed = body.stream if "stream" in body.model_fields_set else prefers_event_stream(request.headers.get("accept"))
    if not streamed:
        return await bounded(request, answer(), timeout)

    ids = itertools.count()

    def event(name: str, data: dict) -> str:
        return f"id: {next(ids)}\nevent: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events():
        sent = []
        yield event("chunk", {"text": composition.prompt})
        try:
            async with aclosing(with_keepalive(bounded_stream(request, composition.chunks, timeout),
                                               KEEPALIVE_S)) as chunks:
                async for text in chunks:
                    if text is None:
                        yield KEEPALIVE
                        continue
                    sent.append(text)
                    yield event("chunk", {"text": text})
            left = time_left()
            checked = _one(bounded(request, _music_answer(model, composition, sent, left, stop), left))
            async with aclosing(with_keepalive(checked, KEEPALIVE_S)) as results:
                async for result in results:
                    if result is None:
                        yield KEEPALIVE
        except (RequestTimeout, ShuttingDown) as error:
            code = "timeout" if isinstance(error, RequestTimeout) else "shutting_down"
            note(stream_end=code)
            yield event("error", {"error": code, "message": str(error)})
            return
        except ClientDisconnected:
            note(stream_end="client_gone")
            return
        except Exception as error:  # headers are sent: the failure travels as an event
            log.exception("music stream failed")
            note(stream_end="internal_error")
            yield event("error", {"error": "internal_error", "message": f"generation failed: {type(error).__name__}"})
            return
        note(stream_end="result")
        yield event("result", result.model_dump())

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.post("/generate-music/midi", tags=["music"], operation_id="music_to_midi", dependencies=KEYED,
             response_class=Response,
             responses={200: {"content": {"audio/midi": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "a standard MIDI file (Content-Disposition: attachment)"},
                        **errors(*KEYS, *BODY, E.too_complex, E.timeout, E.shutting_down, E.not_ready,
                                 E.internal_error)},
             summary="One tune in ABC (e.g. from `tunes[i].abc`) as a MIDI file")
async def abc_to_midi(request: Request, body: schemas.MidiRequest, model: Music) -> Response:
    try:
        data = await bounded(request, model.to_midi(body.abc), model.settings.request_timeout_s)
    except ValueError as error:
        raise RequestValidationError([{"loc": ("body", "abc"), "type": "value_error", "msg": str(error),
                                       "input": None}]) from error
    return Response(data, media_type="audio/midi", headers={"Content-Disposition": 'attachment; filename="tune.mid"'})
