"""Connection limits (service/http.py): against real `python -m service` processes, with raw sockets.

The servers run with short limits (1 s timeouts, 20 connections) so that each test takes seconds.
Two cases that the service cannot show are checked on uvicorn in-process, with a small app.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from service import http
from service.config import Settings

pytestmark = pytest.mark.slow  # starts real server processes and waits out timeouts

REPO_ROOT = Path(__file__).resolve().parents[2]
SHORT_LIMITS = {"SEQSERVE_HEADER_TIMEOUT_S": "1", "SEQSERVE_BODY_TIMEOUT_S": "1",
                "SEQSERVE_KEEP_ALIVE_TIMEOUT_S": "1", "SEQSERVE_MAX_CONNECTIONS": "20"}


class Served:
    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.port, self.log = process, port, log

    def connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.settimeout(5)
        return sock

    def healthz(self) -> int | None:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).status_code
        except httpx.TransportError:
            return None

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])


def start(tmp_path: Path, env: dict[str, str], fd_limit: tuple[int, int] | None = None):
    """`python -m service` on a free port, with `env` and optionally RLIMIT_NOFILE (soft, hard)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / f"server-{port}.log"
    base = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
            cwd=REPO_ROOT, env={**base, **env}, stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: resource.setrlimit(resource.RLIMIT_NOFILE, fd_limit)) if fd_limit else None)
    served = Served(process, port, log)
    deadline = time.monotonic() + 90
    while served.healthz() != 200:
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    return served


def stop(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        served.process.kill()
        served.process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    served = start(tmp_path_factory.mktemp("connections"), SHORT_LIMITS)
    yield served
    stop(served)


def closed_after(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the server closes `sock` (whatever it sends first is read and dropped); None: still open."""
    began = time.monotonic()
    while True:
        left = max(0.0, began + limit - time.monotonic())
        if select.select([sock], [], [], left)[0]:
            try:
                if not sock.recv(65536):
                    return time.monotonic() - began
            except ConnectionResetError:
                return time.monotonic() - began
        elif not left:
            return None


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One HTTP answer, read up to the server's close (all these answers end the connection)."""
    data = b""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    else:
        raise AssertionError(f"the connection was not closed after {data!r}")
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(server):
    with server.connect() as sock:
        elapsed = closed_after(sock, 5)
    assert elapsed is not None and 0.8 < elapsed < 2.5


def test_headers_trickled_slowly_are_cut_off_at_the_header_timeout(server):
    with server.connect() as sock:
        began = time.monotonic()
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        while time.monotonic() - began < 5:  # a header line every 0.1 s, never the blank line
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            if closed_after(sock, 0.1) is not None:
                break
        elapsed = time.monotonic() - began
    assert 0.8 < elapsed < 2.5


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(server):
    with server.connect() as sock:
        for _ in range(2):  # two requests on one connection still work
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n")
            answer = b""
            while not answer.endswith(b'{"status":"ok"}'):
                answer += sock.recv(65536)
            assert answer.startswith(b"HTTP/1.1 200 ")
        elapsed = closed_after(sock, 5)
    assert elapsed is not None and 0.8 < elapsed < 2.5


def test_a_64_kib_header_gets_431_json_and_the_connection_closes(server):
    with server.connect() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: " + b"a" * 64 * 1024 + b"\r\n\r\n")
        status, headers, body = read_answer(sock)
    assert status == 431 and headers["content-type"] == "application/json" and headers["connection"] == "close"
    assert json.loads(body)["error"] == "headers_too_large" and "16384 bytes" in json.loads(body)["message"]


def test_a_body_that_stops_midway_gets_408_json_at_the_body_timeout(server):
    with server.connect() as sock:
        began = time.monotonic()
        sock.sendall(b"POST /sentiment HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\": \"half")
        status, headers, body = read_answer(sock)
        elapsed = time.monotonic() - began
    assert status == 408 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "request_timeout", "message": "no request body received for 1 s"}
    assert 0.8 < elapsed < 2.5
    # The route that was waiting for the body learns the client is gone: no error is logged
    # (each such client used to leave an "unhandled error" and two tracebacks).
    time.sleep(0.2)
    logged = server.log.read_text()
    assert "unhandled error" not in logged and "Exception in ASGI application" not in logged


def test_a_request_uvicorn_cannot_parse_gets_400_json(server):
    with server.connect() as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = read_answer(sock)
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "bad_request", "message": "Invalid HTTP request received."}


def test_unfinished_1_mib_headers_do_not_grow_the_server(server):
    before = server.rss_kib()
    socks = [server.connect() for _ in range(10)]
    try:
        chunk = b"a" * 64 * 1024
        for sock in socks:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Big: ")
        for _ in range(16):  # 1 MiB each, never the end of the header
            for sock in socks:
                try:
                    sock.sendall(chunk)
                except OSError:
                    pass  # the server answered 431 and stopped reading
        answers = []
        for sock in socks:
            try:
                answers.append(sock.recv(64).split(b" ")[1])
            except OSError:
                answers.append(b"reset")
        time.sleep(0.2)
        after = server.rss_kib()
    finally:
        for sock in socks:
            sock.close()
    print(f"server RSS {before} KiB before, {after} KiB after 10 unfinished 1 MiB headers")
    assert answers == [b"431"] * 10
    assert after - before < 4 * 1024  # without the limit: about 10 MiB more


def test_connections_over_the_cap_are_closed_at_once_and_healthz_answers_once_idle_ones_time_out(server):
    time.sleep(0.3)  # connections of earlier tests are gone
    began = time.monotonic()
    socks = [server.connect() for _ in range(30)]
    try:
        time.sleep(0.3)
        closed = [i for i, sock in enumerate(socks) if closed_after(sock, 0) is not None]
        assert closed == list(range(20, 30))  # the 20 first are held (until the header timeout), the rest closed
        while (status := server.healthz()) != 200 and time.monotonic() - began < 5:
            time.sleep(0.1)
        assert status == 200 and time.monotonic() - began < 3
    finally:
        for sock in socks:
            sock.close()


def test_the_cap_stays_below_the_file_descriptor_limit(tmp_path):
    # Soft limit 100, hard 160: the soft limit is raised to 160, the cap (1000 asked) is 160 - 64 = 96.
    env = {**SHORT_LIMITS, "SEQSERVE_MAX_CONNECTIONS": "1000"}
    served = start(tmp_path, env, fd_limit=(100, 160))
    socks = []
    try:
        assert "at most 96 open (max_connections 1000, file-descriptor limit 160" in served.log.read_text()
        began = time.monotonic()
        socks = [served.connect() for _ in range(150)]
        time.sleep(0.3)
        closed = [i for i, sock in enumerate(socks) if closed_after(sock, 0) is not None]
        assert len(closed) == 150 - 96
        while (status := served.healthz()) != 200 and time.monotonic() - began < 5:
            time.sleep(0.1)
        assert status == 200 and time.monotonic() - began < 3
    finally:
        for sock in socks:
            sock.close()
        stop(served)
    assert "Too many open files" not in served.log.read_text()


class InProcess:
    """uvicorn with the service's protocol class around a small ASGI app, in a thread (no models)."""

    def __init__(self, app, settings: Settings, **config):
        self.listening = socket.create_server(("127.0.0.1", 0))
        self.server = uvicorn.Server(uvicorn.Config(app, http=http.protocol(settings), lifespan="off",
                                                    log_config=None, **config))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.listening]}, daemon=True)

    def __enter__(self) -> tuple[str, int]:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.listening.getsockname()

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.listening.close()


async def ok_app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def test_the_503_of_uvicorn_s_limit_concurrency_is_json():
    with InProcess(ok_app, Settings(), limit_concurrency=1) as address:
        with socket.create_connection(address, timeout=5), socket.create_connection(address, timeout=5) as sock:
            time.sleep(0.1)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
            status, headers, body = read_answer(sock)
    assert status == 503 and headers["content-type"] == "application/json"
    assert json.loads(body) == {"error": "overloaded", "message": "Exceeded concurrency limit."}


def test_time_the_server_itself_stops_reading_a_body_is_not_a_body_timeout():
    """An app slow to take the body makes uvicorn pause reading (past 64 KiB); that is no client delay."""

    async def slow_app(scope, receive, send):
        await asyncio.sleep(2.5)  # longer than the 1 s body timeout
        received, more = 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                received = -1
                break
            received, more = received + len(message["body"]), message["more_body"]
        body = str(received).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})

    with InProcess(slow_app, Settings(header_timeout_s=1, body_timeout_s=1)) as address:
        with socket.create_connection(address, timeout=10) as sock:
            size = 2 * 1024 * 1024
            sock.sendall(b"POST / HTTP/1.1\r\nHost: test\r\nContent-Length: %d\r\n\r\n" % size + b"a" * size)
            answer = b""
            while not answer.endswith(b"\r\n\r\n%d" % size) and (chunk := sock.recv(65536)):
                answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"%d" % size)


def sentiment_statuses(served: Served, forwarded_for: list[str]) -> list[int]:
    with httpx.Client(base_url=f"http://127.0.0.1:{served.port}", timeout=10) as client:
        return [client.post("/sentiment", json={"text": "Loved it."}, headers={"X-Forwarded-For": address}).status_code
                for address in forwarded_for]


def test_x_forwarded_for_is_ignored_without_trusted_proxies(tmp_path):
    served = start(tmp_path, {"SEQSERVE_RATE_LIMIT_PER_MINUTE": "2"})
    try:  # three "clients" by their header, one by their address: one bucket of 2
        assert sentiment_statuses(served, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) == [200, 200, 429]
    finally:
        stop(served)


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(tmp_path):
    served = start(tmp_path, {"SEQSERVE_RATE_LIMIT_PER_MINUTE": "2", "SEQSERVE_FORWARDED_ALLOW_IPS": "127.0.0.1"})
    try:
        assert sentiment_statuses(served, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]) == [200, 200, 200]
        assert sentiment_statuses(served, ["10.0.0.1", "10.0.0.1"]) == [200, 429]
    finally:
        stop(served)


class FakeCycle:
    def __init__(self, path: str):
        self.scope = {"path": path}


def test_a_burst_begins_a_few_requests_per_loop_turn_in_arrival_order_and_probes_at_once():
    async def scenario():
        pacer = http.StartPacer(asyncio.get_running_loop(), per_tick=16)
        begun: list[str] = []
        start = lambda cycle, app: begun.append(cycle.scope["path"])  # noqa: E731
        for i in range(40):
            pacer.begin(start, FakeCycle(f"/sentiment/{i}"), None)
        after_arrival = list(begun)
        pacer.begin(start, FakeCycle("/healthz"), None)  # behind 24 waiting requests
        probe_at = len(begun)
        turns = []
        while len(begun) < 41:
            await asyncio.sleep(0)
            turns.append(len(begun))
        return after_arrival, probe_at, begun, turns

    after_arrival, probe_at, begun, turns = asyncio.run(scenario())
    assert after_arrival == [f"/sentiment/{i}" for i in range(16)]
    assert probe_at == 17 and begun[16] == "/healthz", "a probe waits for no burst"
    assert [p for p in begun if p != "/healthz"] == [f"/sentiment/{i}" for i in range(40)], "arrival order kept"
    assert turns[:2] == [33, 41], "16 more per turn"


def test_no_route_dependency_runs_in_the_thread_pool():
    """FastAPI runs a plain `def` dependency in its thread pool: a hand-off per request the event loop pays for."""
    import inspect

    from fastapi.routing import APIRoute

    from service.api import v2
    from service.api.routes import ROUTERS

    def calls(dependant):
        for dependency in dependant.dependencies:
            yield dependency.call
            yield from calls(dependency)

    found = {(route.path, call) for router in [*ROUTERS, v2.router] for route in router.routes
             if isinstance(route, APIRoute) for call in calls(route.dependant)}
    sync = {f"{path}: {getattr(call, '__name__', call)}" for path, call in found
            if not (inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(getattr(call, "__call__", None)))}
    assert len(found) > 10 and not sync
