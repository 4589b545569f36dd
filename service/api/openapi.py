"""The OpenAPI document as clients generate from it: a tag per task, the schemas of the
streamed events, and security that says what the running service asks for (API keys on or
off, /metrics open or not; the 401 each keyed route documents applies when keys are on).
The routes declare the rest: operation ids, every error per
status (routes.common.errors), the two security schemes (deps.KEYED)."""

from __future__ import annotations

from fastapi import FastAPI

from service.api import schemas
from service.config import Settings

TAGS = [
    {"name": "sentiment", "description": "Positive or negative, for English reviews (`POST /sentiment`)."},
    {"name": "translation", "description": "English to Spanish with the attention matrix (`POST /translate`)."},
    {"name": "music", "description": "Folk tunes in ABC notation, as JSON or streamed as Server-Sent Events, and "
                                     "a tune as MIDI (`POST /generate-music`, `POST /generate-music/midi`)."},
    {"name": "operations", "description": "Liveness, readiness, the models served and Prometheus metrics."},
]
EVENT_SCHEMAS = (schemas.MusicChunk, schemas.MusicStreamError)  # the data of /generate-music's events


def install(app: FastAPI, settings: Settings) -> None:
    build = app.openapi

    def openapi() -> dict:
        if getattr(app.state, "openapi_done", False):
            return app.openapi_schema
        spec = build()
        known = {tag["name"] for tag in spec.get("tags", [])}
        spec["tags"] = [tag for tag in TAGS if tag["name"] not in known] + spec.get("tags", [])
        components = spec.setdefault("components", {}).setdefault("schemas", {})
        for model in EVENT_SCHEMAS:
            components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for path, operations in spec["paths"].items():
            for operation in operations.values():
                if "security" not in operation:
                    continue
                if path == "/metrics" and settings.metrics_open or not settings.api_keys:
                    operation["security"] = operation["security"] + [{}]  # a key is welcome, not needed
        app.state.openapi_done = True
        return spec

    app.openapi = openapi
