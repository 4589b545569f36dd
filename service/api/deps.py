"""Dependencies the routes declare: the registry and a ready model of a task."""

from __future__ import annotations

from fastapi import Request

from service.registry import ModelRegistry
from service.tasks.base import ModelNotReady
from service.tasks.sentiment import SentimentModel


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_sentiment_model(request: Request) -> SentimentModel:
    model = get_registry(request).get("sentiment")
    if model is None:
        raise ModelNotReady("no sentiment model is loaded")
    model.require_ready()
    return model
