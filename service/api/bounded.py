"""Model work bounded by the request: one deadline (503), the client's disconnect (cancel) and
the server's shutdown (503 before the grace period runs out), for plain and streamed answers.

Cancelling the awaited work is enough to stop it: a batcher skips items whose future is
cancelled, a generation stream leaves its batch when its reader goes away, and a music21 call
is cancelled with its worker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from fastapi import Request
from service.errors import ClientDisconnected, RequestTimeout, ShuttingDown

T = TypeVar("T")
CUT_MARGIN_S = 2.0  # work still running this long before the grace period ends is cut, so its answer gets out


class Drain:
    """The server's stop, as the app sees it: `draining` from the signal on (/readyz fails, so
    load balancers stop sending), and `cut` set shortly before the grace period ends, when work
    still in flight is answered with an error rather than dropped with the connection."""

    def __init__(self) -> None:
        self.draining = False
        self._cut: asyncio.Event | None = None

    @property
    def cut(self) -> asyncio.Event:
        if self._cut is None:
            self._cut = asyncio.Event()
        return self._cut

    def begin(self, grace_s: float) -> None:
        """On the event loop: the server got SIGTERM and allows `grace_s` for what is in flight."""
        if self.draining:
            return
        self.draining = True
        asyncio.get_running_loop().call_later(max(grace_s - CUT_MARGIN_S, grace_s / 2), self.cut.set)


def _drain(request: Request) -> Drain:
    return request.app.state.drain


async def _disconnect(request: Request) -> None:
    # The body is already read, so the next message on the channel is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def bounded(request: Request, work: Awaitable[T], timeout_s: float) -> T:
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnect(request))
    cut = asyncio.ensure_future(_drain(request).cut.wait())
    try:
        done, _ = await asyncio.wait({task, watcher, cut}, timeout=timeout_s or None,
                                     return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        if watcher in done:
            raise ClientDisconnected("client closed the connection")
        if cut in done:
            raise ShuttingDown("the server is shutting down; retry on another replica")
        raise RequestTimeout(f"no answer within {timeout_s:g} s (request_timeout_s)")
    finally:
        task.cancel()
        watcher.cancel()
        cut.cancel()


async def bounded_stream(request: Request, chunks: AsyncIterator[T], timeout_s: float) -> AsyncIterator[T]:
    """The chunks of a streamed answer under the same deadline and shutdown cut as `bounded`
    (a client that leaves ends the stream through the server closing the generator)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s if timeout_s else None
    cut = asyncio.ensure_future(_drain(request).cut.wait())
    try:
        while True:
            step = asyncio.ensure_future(anext(chunks))
            remaining = None if deadline is None else max(deadline - loop.time(), 0)
            done, _ = await asyncio.wait({step, cut}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
            if step not in done:
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)  # the stream must stop before it is closed
                if cut in done:
                    raise ShuttingDown("the server is shutting down; retry on another replica")
                raise RequestTimeout(f"no answer within {timeout_s:g} s (request_timeout_s)")
            try:
                yield step.result()
            except StopAsyncIteration:
                return
    finally:
        cut.cancel()
        await chunks.aclose()
