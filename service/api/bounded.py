"""Model work bounded by the request: a timeout (503) and the client's disconnect (cancel).

Cancelling the awaited work is enough to stop it: a batcher skips items whose future is
cancelled, and a generation stream leaves its batch when its reader goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

T = TypeVar("T")


class RequestTimeout(Exception):
    """The request was not answered within `request_timeout_s`."""


class ClientDisconnected(Exception):
    """The client went away before its answer was ready."""


async def _disconnect(request: Request) -> None:
    # The body is already read, so the next message on the channel is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def bounded(request: Request, work: Awaitable[T], timeout_s: float) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, timeout=timeout_s or None, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if watcher in done:
            raise ClientDisconnected("client closed the connection")
        raise RequestTimeout(f"no answer within {timeout_s:g} s (request_timeout_s)")
    finally:
        task.cancel()
        watcher.cancel()
