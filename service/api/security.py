"""Optional API keys and a per-key rate limit, as ASGI middleware.

With keys configured, every route except the open ones needs `Authorization: Bearer <key>`
or `X-API-Key: <key>`; a missing or wrong key gets 401. Keys are compared in constant time
(hmac.compare_digest against every configured key) and never logged; a caller is known to
the rate limiter by a hash of its key.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response

ALWAYS_OPEN = {"/healthz", "/readyz"}
DOCS = {"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


class TokenBucket:
    """`per_minute` requests a minute, bursts up to the same number."""

    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self.tokens = self.capacity
        self.updated = time.monotonic()

    def take(self) -> float:
        """0 if a request may pass now, else the seconds until it may."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


class AccessControl:
    def __init__(self, app: ASGIApp, api_keys: list[str], metrics_open: bool, rate_limit_per_minute: int):
        self.app = app
        self.keys = [key.encode() for key in api_keys]
        self.open = ALWAYS_OPEN | DOCS | ({"/metrics"} if metrics_open else set())
        self.rate_limit = rate_limit_per_minute
        self.buckets: dict[str, TokenBucket] = {}

    def _key(self, scope: Scope) -> bytes | None:
        headers = dict(scope["headers"])
        authorization = headers.get(b"authorization", b"")
        if authorization[:7].lower() == b"bearer ":
            return authorization[7:].strip()
        return headers.get(b"x-api-key")

    def _known(self, key: bytes) -> bool:
        matched = False
        for candidate in self.keys:  # no early exit: the time taken does not say which key matched
            matched |= hmac.compare_digest(key, candidate)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open or (not self.keys and not self.rate_limit):
            await self.app(scope, receive, send)
            return
        key = self._key(scope)
        if self.keys and (key is None or not self._known(key)):
            message = "missing API key" if key is None else "invalid API key"
            response = error_response(401, "unauthorized", f"{message}: send Authorization: Bearer <key> or X-API-Key",
                                      headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if self.rate_limit:
            caller = hashlib.sha256(key or b"").hexdigest() if self.keys else _client_address(scope)
            wait = self.buckets.setdefault(caller, TokenBucket(self.rate_limit)).take()
            if wait:
                response = error_response(429, "rate_limited", f"over {self.rate_limit} requests a minute",
                                          headers={"Retry-After": str(max(1, math.ceil(wait)))})
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return client[0] if client else "unknown"
