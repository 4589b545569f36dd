"""Dependencies the routes declare: the registry, a ready model of a task, and the client.

All are `async def` although none awaits: FastAPI runs a plain `def` dependency in its thread
pool, a hand-off (and a GIL hand-back) per dependency per request that the event loop pays for."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPBearer

from service.registry import ModelRegistry
from service.errors import ModelNotReady
from service.tasks.music import MusicModel
from service.tasks.sentiment import SentimentModel
from service.tasks.translate import TranslateModel


async def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def _ready_model(request: Request, task: str):
    model = request.app.state.registry.get(task)
    if model is None:
        raise ModelNotReady(f"no {task} model is loaded")
    model.require_ready()
    return model


async def get_sentiment_model(request: Request) -> SentimentModel:
    return _ready_model(request, "sentiment")


async def get_music_model(request: Request) -> MusicModel:
    return _ready_model(request, "music")


async def get_translate_model(request: Request) -> TranslateModel:
    return _ready_model(request, "translate")


async def get_client(request: Request) -> str:
    """Who is asking, for fair shares: set by AccessControl (a hash of the API key, or the
    client address where there are no keys)."""
    return request.state.client


# The two ways to send an API key, declared for the OpenAPI document (its security schemes, and
# /docs' Authorize button). They check nothing: AccessControl (security.py) does, before routing.
bearer = HTTPBearer(auto_error=False, scheme_name="Bearer",
                    description="`Authorization: Bearer <key>`, when the service runs with API_KEYS")
api_key = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="ApiKey",
                       description="`X-API-Key: <key>`, when the service runs with API_KEYS")
KEYED = [Security(bearer), Security(api_key)]  # either one

Registry = Annotated[ModelRegistry, Depends(get_registry)]
Sentiment = Annotated[SentimentModel, Depends(get_sentiment_model)]
Music = Annotated[MusicModel, Depends(get_music_model)]
Translate = Annotated[TranslateModel, Depends(get_translate_model)]
Client = Annotated[str, Depends(get_client)]
