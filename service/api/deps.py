"""Dependencies the routes declare: the registry and a ready model of a task."""

from __future__ import annotations

from fastapi import Request

from service.registry import ModelRegistry
from service.tasks.base import ModelNotReady
from service.tasks.music import MusicModel
from service.tasks.sentiment import SentimentModel
from service.tasks.translate import TranslateModel


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def _ready_model(request: Request, task: str):
    model = get_registry(request).get(task)
    if model is None:
        raise ModelNotReady(f"no {task} model is loaded")
    model.require_ready()
    return model


def get_sentiment_model(request: Request) -> SentimentModel:
    return _ready_model(request, "sentiment")


def get_music_model(request: Request) -> MusicModel:
    return _ready_model(request, "music")


def get_translate_model(request: Request) -> TranslateModel:
    return _ready_model(request, "translate")
