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

from limits import RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Receive, Scope, Send

from service.api.errors import error_response

ALWAYS_OPEN = {"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"}
DOCS = {"/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}  # the playground, the docs
OPEN_PREFIXES = ("/static/",)  # and the files they load (service/api/pages.py)


class AccessControl:
    """Also names the client of every request (`scope["state"]["client"]`), which the batchers'
    fair shares use: a hash of its key, or its address (as uvicorn reports it: the peer, or
    what a trusted proxy says, see `forwarded_allow_ips`)."""

    def __init__(self, app: ASGIApp, api_keys: list[str], metrics_open: bool, rate_limit_per_minute: int):
        self.app = app
        self.keys = [key.encode() for key in api_keys]
        self.open = ALWAYS_OPEN | DOCS | ({"/metrics"} if metrics_open else set())
        self.rate_limit = rate_limit_per_minute
        # The `limits` library: a sliding-window counter per client, in memory, whose entries
        # expire with their window (so a stream of new client addresses cannot grow it forever).
        if rate_limit_per_minute:
            self.limit = RateLimitItemPerMinute(rate_limit_per_minute)
            self.limiter = SlidingWindowCounterRateLimiter(MemoryStorage())

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
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = self._key(scope) if self.keys else None
        client = "key:" + hashlib.sha256(key).hexdigest()[:16] if key is not None else _client_address(scope)
        scope.setdefault("state", {})["client"] = client
        if scope["path"] in self.open or scope["path"].startswith(OPEN_PREFIXES):
            await self.app(scope, receive, send)
            return
        if self.keys and (key is None or not self._known(key)):
            message = "missing API key" if key is None else "invalid API key"
            response = error_response(401, "unauthorized", f"{message}: send Authorization: Bearer <key> or X-API-Key",
                                      headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if self.rate_limit and not await self.limiter.hit(self.limit, client):
            reset_at, _ = await self.limiter.get_window_stats(self.limit, client)
            response = error_response(429, "rate_limited", f"over {self.rate_limit} requests a minute",
                                      headers={"Retry-After": str(max(1, math.ceil(reset_at - time.time())))})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"address:{client[0]}" if client else "address:unknown"
