"""ASGI middleware: request body limits (413, per endpoint), request id, per-request metrics and the access log."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_response
from service.metrics import Metrics
from service.request_log import access_log, open_record


# Strings in one JSON body at most (the largest legitimate body, 64 texts, has under 150). JSON
# is parsed on the event loop, and a body of a few MB made of tiny strings (200,000 keys) takes
# it ~60 ms where a legitimate one of the same size takes 1 ms: counting quotes first (bytes.count,
# ~1 ms for 4 MB) refuses those before parsing.
MAX_JSON_STRINGS = 1_000


def json_strings(body: bytes) -> int:
    """How many strings a JSON body holds, from its quotes (escaped ones left out), without
    parsing it; never more than the truth (an escaped backslash before a closing quote makes it
    one less)."""
    return (body.count(b'"') - body.count(b'\\"')) // 2


class GuardedJSONRoute(APIRoute):
    """A route whose JSON body is refused (422) before parsing when it holds more strings
    than any request needs."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def guarded(request: Request) -> Response:
            strings = json_strings(await request.body())  # read once; the handler reuses it
            if strings > MAX_JSON_STRINGS:
                return error_response(422, "validation_error", f"body: over {MAX_JSON_STRINGS:,} JSON strings "
                                      f"({strings:,}); no request needs so many", fields=[
                                          {"loc": ["body"], "message": f"over {MAX_JSON_STRINGS:,} JSON strings"}])
            return await handle(request)

        return guarded


class RequestGuard:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, known_paths: set[str],
                 endpoint_body_bytes: dict[str, int] | None = None):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.endpoint_body_bytes = {path: min(limit, max_body_bytes) for path, limit in (endpoint_body_bytes or {}).items()}
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:128] or f"{random.getrandbits(128):032x}"  # an id, not a secret: no urandom call
        endpoint = self._endpoint(scope["path"])
        status = 500
        started = time.perf_counter()
        record = open_record(request_id=request_id, method=scope["method"], route=endpoint)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [(b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            limit = self.endpoint_body_bytes.get(scope["path"], self.max_body_bytes)
            declared = headers.get(b"content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                response = error_response(413, "payload_too_large", f"request body over {limit} bytes")
                await response(scope, receive, send_with_id)
                return
            await self.app(scope, self._limited(receive, limit), send_with_id)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - started
            outcome = record.get("error") or record.get("stream_end") or ("ok" if status < 400 else "error")
            self.metrics.requests.labels(endpoint, str(status), "ok" if outcome == "result" else outcome).inc()
            self.metrics.request_seconds.labels(endpoint, str(status)).observe(elapsed)
            record.update(status=status, latency_ms=round(elapsed * 1000, 2))
            access_log.info("%s %s %s", scope["method"], endpoint, status, extra={"fields": record})

    def _endpoint(self, path: str) -> str:
        """The metrics label of a path: the route, never the raw path (its values are unbounded)."""
        if path in self.known_paths:
            return path
        if path.startswith("/v2/models/") and path.endswith("/infer"):
            return "/v2/models/{name}/infer"
        if path.startswith("/static/"):
            return "/static"  # the pages' files, one label
        return "/v2" if path.startswith("/v2") else "unmatched"

    def _limited(self, receive: Receive, limit: int) -> Receive:
        """Counts a body sent without Content-Length (chunked) and stops it at the limit."""
        received = 0

        async def wrapped() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body over {limit} bytes")
            return message

        return wrapped
