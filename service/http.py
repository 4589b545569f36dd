"""The HTTP server's own limits: open connections, header and body timeouts, header size.

uvicorn's httptools protocol has none of them but the keep-alive timeout: a connection that
sends nothing, or trickles its headers or body, stays open for ever; a header line is buffered
whole, however long; past the file-descriptor limit the server cannot even accept /healthz.
`protocol(settings)` gives uvicorn (`Config(http=...)`) a subclass that adds them:

- at most `max_connections` open connections, kept below the file-descriptor limit (whose soft
  value is raised to the hard one first); one more is closed as soon as it is accepted;
- the request line and headers must be complete within `header_timeout_s` of the connection's
  start, or, on a kept-alive connection, of the next request's first byte (the wait for that
  byte is uvicorn's keep-alive timeout); else the connection is closed;
- more than `max_header_bytes` of them: 431, and no more is read;
- no body bytes for `body_timeout_s` while a request's body is incomplete (not counting time
  the server itself paused reading): 408 if its response has not started, and the connection
  closes; the app's receive() sees http.disconnect;
- at most STARTS_PER_TICK requests begin per turn of the event loop, the rest in arrival order
  on the following turns; health checks begin at once (see StartPacer);
- uvicorn's own plain-text answers (400 for a request it cannot parse, the 503 of
  limit_concurrency) are JSON of the app's error shape, {"error": code, "message": text}.

An answer that ends a connection early (431, 408, 400) is followed by a lingering close: the
write side is shut, and what the client still sends is read and dropped for up to LINGER_S, so
that its unread upload does not turn the close into a reset that destroys the answer.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import weakref
from collections import deque
from dataclasses import dataclass
from typing import ClassVar

from uvicorn.protocols.http.flow_control import FlowControl, service_unavailable
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.config import Settings

log = logging.getLogger("seqserve.http")

RESERVED_FDS = 64  # kept for the server's own files: models, logs, worker pipes, the listening socket
LINGER_S = 2.0
FULL_WARNING_EVERY_S = 10.0
# Requests begun per turn of the event loop: each costs the loop ~0.4 ms up to its first wait
# (parsing, validation, admission), so a burst of 300 arriving together would otherwise hold
# one turn for ~100 ms, and a health check arriving behind it would wait that long.
STARTS_PER_TICK = 16
# Paths a prober polls: they begin at once, never behind a burst of client work.
PROBE_PATHS = frozenset({"/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"})


@dataclass(frozen=True)
class Limits:
    max_connections: int
    header_timeout_s: float
    body_timeout_s: float
    max_header_bytes: int


def raise_fd_limit() -> int | None:
    """Raise the soft RLIMIT_NOFILE to the hard limit; the soft limit then in force (None: unlimited)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as error:
            log.warning("could not raise the file-descriptor limit from %d to %d: %s", soft, hard, error)
    return None if soft == resource.RLIM_INFINITY else soft


def connection_cap(max_connections: int) -> int:
    """`max_connections`, lowered to leave RESERVED_FDS descriptors free under the (raised) limit."""
    fd_limit = raise_fd_limit()
    cap = max_connections if fd_limit is None else max(1, min(max_connections, fd_limit - RESERVED_FDS))
    log.info("connections: at most %d open (max_connections %d, file-descriptor limit %s, %d reserved)",
             cap, max_connections, fd_limit if fd_limit is not None else "unlimited", RESERVED_FDS)
    return cap


def protocol(settings: Settings) -> type[LimitedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http=`, with the limits of `settings` (raises the fd limit)."""
    limits = Limits(max_connections=connection_cap(settings.max_connections),
                    header_timeout_s=settings.header_timeout_s, body_timeout_s=settings.body_timeout_s,
                    max_header_bytes=settings.max_header_bytes)
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "pacers": weakref.WeakKeyDictionary()})


def error_body(code: str, message: str) -> bytes:
    return json.dumps({"error": code, "message": message}).encode()


async def overloaded(scope, receive, send) -> None:
    """uvicorn's limit_concurrency answer (`service_unavailable`), as JSON."""
    body = error_body("overloaded", "Exceeded concurrency limit.")
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class TimedFlowControl(FlowControl):
    """uvicorn's flow control, noting when reading last resumed: while the server pauses reading
    (the app is slow to take the body), the client's silence is not the client's fault."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        super().__init__(transport)
        self._loop = loop
        self.resumed_at = loop.time()

    def resume_reading(self) -> None:
        if self.read_paused:
            self.resumed_at = self._loop.time()
        super().resume_reading()


class StartPacer:
    """Begins at most `per_tick` requests per turn of the event loop, and the rest, in arrival
    order, on the turns that follow; a probe (PROBE_PATHS) begins at once.

    asyncio (and uvloop) run, per turn, every callback that was ready when the turn began: a
    request's task runs its first step (up to its first real wait) in the turn after it was
    created. A burst of requests that arrived together would all run in one turn, and every
    other connection, a health check included, would wait for the whole burst."""

    def __init__(self, loop: asyncio.AbstractEventLoop, per_tick: int = STARTS_PER_TICK):
        self.loop = loop
        self.per_tick = per_tick
        self.started = 0  # in this turn
        self.waiting: deque = deque()  # (start, cycle, app)
        self.turn_scheduled = False

    def begin(self, start, cycle, app) -> None:
        if cycle.scope["path"] in PROBE_PATHS or (not self.waiting and self.started < self.per_tick):
            self.started += 1
            start(cycle, app)
        else:
            self.waiting.append((start, cycle, app))
        if not self.turn_scheduled:
            self.turn_scheduled = True
            self.loop.call_soon(self.next_turn)

    def next_turn(self) -> None:
        self.started = 0
        while self.waiting and self.started < self.per_tick:
            start, cycle, app = self.waiting.popleft()
            self.started += 1
            start(cycle, app)  # a client that left meanwhile: the app's receive() says so at once
        self.turn_scheduled = bool(self.waiting) or self.started > 0
        if self.turn_scheduled:
            self.loop.call_soon(self.next_turn)


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[Limits]
    pacers: ClassVar[weakref.WeakKeyDictionary]  # event loop -> its StartPacer
    _full_warned_at: ClassVar[float] = float("-inf")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.phase = "idle"  # idle (between requests) -> headers -> body (headers complete) -> idle
        self.header_bytes = 0  # of the request line and headers that arrived so far
        self.headers_completed = False  # during one feed of the parser
        self.body_seen_at = 0.0
        self.ignore_input = False  # refused, lingering, or closing: nothing more is parsed
        self.header_timer: asyncio.TimerHandle | None = None
        self.body_timer: asyncio.TimerHandle | None = None
        self.linger_timer: asyncio.TimerHandle | None = None

    # Connections
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.connections) >= self.limits.max_connections:
            self.transport = transport
            self.ignore_input = True
            transport.close()
            now = self.loop.time()
            if now - LimitedHttpToolsProtocol._full_warned_at >= FULL_WARNING_EVERY_S:
                LimitedHttpToolsProtocol._full_warned_at = now
                log.warning("%d connections open, the most allowed: new ones are closed", len(self.connections))
            return
        super().connection_made(transport)
        self.flow = TimedFlowControl(transport, self.loop)
        self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self.header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_timers()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
        super().connection_lost(exc)

    def stop_timers(self) -> None:
        for timer in (self.header_timer, self.body_timer):
            if timer is not None:
                timer.cancel()
        self.header_timer = self.body_timer = None

    # Input: the header byte count
    def data_received(self, data: bytes) -> None:
        while data and not self.ignore_input:
            waiting_for_headers = self.phase != "body"
            if waiting_for_headers:
                if self.header_timer is None:  # the first byte of a request on a kept-alive connection
                    self.header_timer = self.loop.call_later(self.limits.header_timeout_s, self.header_timeout)
                room = self.limits.max_header_bytes - self.header_bytes
                if room <= 0:
                    self.refuse(431, "headers_too_large",
                                f"request line and headers over {self.limits.max_header_bytes} bytes")
                    return
                piece, data = data[:room], data[room:]
            else:
                piece, data = data, b""
            self.headers_completed = False
            super().data_received(piece)
            if self.ignore_input or self.transport.is_closing():
                return
            if self.phase != "body":
                if waiting_for_headers and not self.headers_completed:
                    self.header_bytes += len(piece)  # all of it was request line and headers
                else:
                    # A request ended inside this piece and the next one began: where is not known,
                    # count what the parser has shown of it (one read, at most, goes uncounted).
                    self.header_bytes = self.visible_header_bytes()
                    if self.header_bytes > self.limits.max_header_bytes:
                        self.refuse(431, "headers_too_large",
                                    f"request line and headers over {self.limits.max_header_bytes} bytes")

    def visible_header_bytes(self) -> int:
        if self.phase != "headers":
            return 0
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    # Parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.phase = "headers"

    def on_headers_complete(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None
        self.phase = "body"
        self.header_bytes = 0
        self.headers_completed = True
        self.body_seen_at = self.loop.time()
        if self.body_timer is None:
            self.body_timer = self.loop.call_later(self.limits.body_timeout_s, self.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.body_seen_at = self.loop.time()
        super().on_body(body)

    def on_message_complete(self) -> None:
        self.phase = "idle"
        if self.body_timer is not None:
            self.body_timer.cancel()
            self.body_timer = None
        super().on_message_complete()

    # Timeouts
    def header_timeout(self) -> None:
        self.header_timer = None
        if self.phase != "body" and not self.ignore_input:
            self.refuse(None)

    def body_timeout(self) -> None:
        self.body_timer = None
        if self.phase != "body" or self.ignore_input:
            return
        now = self.loop.time()
        if self.flow.read_paused or (self.cycle is not None and self.cycle.waiting_for_100_continue):
            # The server is not reading, or the client waits for its 100 Continue: not the client's delay.
            self.body_seen_at = now
        left = max(self.body_seen_at, self.flow.resumed_at) + self.limits.body_timeout_s - now
        if left > 0:
            self.body_timer = self.loop.call_later(left, self.body_timeout)
            return
        self.refuse(408, "request_timeout", f"no request body received for {self.limits.body_timeout_s:g} s")

    # Answers that end the connection
    def refuse(self, status: int | None, code: str = "", message: str = "") -> None:
        """Read no more from this connection: answer `status` (None: no answer) as JSON where no
        other response is under way, then close."""
        self.ignore_input = True
        self.stop_timers()
        cycle = self.cycle
        if self.phase == "body" and cycle is not None:
            # The request whose body stalled is self.cycle (or queued behind an answer in progress).
            answer = status is not None and not self.pipeline and not cycle.response_started
            cycle.disconnected = True  # the app's receive() gets http.disconnect, its send() is dropped
            cycle.message_event.set()
        elif cycle is not None and not cycle.response_complete:
            # An earlier request on this connection is still being answered: finish it, then close.
            cycle.keep_alive = False
            return
        else:
            answer = status is not None
        if not answer:
            self.transport.close()
            return
        body = error_body(code, message)
        content = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: application/json\r\n",
                        b"content-length: " + str(len(body)).encode() + b"\r\n",
                        b"connection: close\r\n\r\n", body])
        self.transport.write(b"".join(content))
        self.linger()

    def linger(self) -> None:
        """Shut the write side, keep reading (and dropping) what the client still sends, then close."""
        self.flow.resume_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.linger_timer = self.loop.call_later(LINGER_S, self.transport.abort)

    def handle_websocket_upgrade(self) -> None:
        self.ignore_input = True  # the WebSocket protocol takes the connection over, with its own timeouts
        self.stop_timers()
        super().handle_websocket_upgrade()

    def send_400_response(self, msg: str) -> None:
        self.refuse(400, "bad_request", msg)

    def _start_asgi_task(self, cycle, app) -> None:
        pacer = self.pacers.get(self.loop)
        if pacer is None:
            pacer = self.pacers[self.loop] = StartPacer(self.loop)
        pacer.begin(super()._start_asgi_task, cycle, overloaded if app is service_unavailable else app)
