"""`python -m benchmarks.hostile`: a hostile-client suite against a real `python -m service`.

Each attack is a function `attack_*(server) -> Result` (bounded in time and count, loopback only)
that says what it sent, what came back, whether the protection held, and its figures. While each
runs, a probe process samples GET /healthz every 50 ms (bar: worst latency < 100 ms) and the
service's resident memory (bar: within 10% of its warm level at the end of the attack).

Two services are started, one after the other:
- "open": no API keys (a client is its address), a rate limit of 60/min and CORS for
  https://ok.example: validation bomb, NFKC prompt, MIDI limits, a long tune in the output,
  long prompts, CORS refusal, X-Forwarded-For (last: it spends the rate-limit bucket);
- "keyed": API keys key-a,key-b,key-c (three clients on loopback), RLIMIT_NOFILE 1024, header and
  body timeouts of 2 s, graceful shutdown 6 s: fairness and floods (translation, music), connection
  attacks, then SIGTERM with streams in flight (last: it stops the service).

    python -m benchmarks.hostile                       # everything (a few minutes on 2 cores)
    python -m benchmarks.hostile --only cheap          # the cheap attacks (seconds each)
    python -m benchmarks.hostile --only music_fairness,sigterm --out /tmp/h.json

Prints one table and writes benchmarks/hostile.json.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.server import REPO_ROOT, ServiceProcess, free_port

HEALTHZ_BAR_MS = 100.0
RSS_BAR = 0.10
PROBE_EVERY_S = 0.05
KEYS = ("key-a", "key-b", "key-c")

# The services' settings. Timeouts are short so that connection attacks take seconds.
CONNECTION_LIMITS = {"SEQSERVE_HEADER_TIMEOUT_S": "2", "SEQSERVE_BODY_TIMEOUT_S": "2",
                     "SEQSERVE_KEEP_ALIVE_TIMEOUT_S": "2"}
OPEN_RATE_LIMIT = 60
OPEN_ENV = {**CONNECTION_LIMITS, "SEQSERVE_RATE_LIMIT_PER_MINUTE": str(OPEN_RATE_LIMIT),
            "SEQSERVE_CORS_ORIGINS": "https://ok.example"}
KEYED_ENV = {**CONNECTION_LIMITS, "SEQSERVE_API_KEYS": ",".join(KEYS), "SEQSERVE_GRACEFUL_SHUTDOWN_S": "6",
             "SEQSERVE_REQUEST_TIMEOUT_S": "60"}
KEYED_FD_LIMIT = 1024


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


# ---------------------------------------------------------------------------------------------
# The service, the probe, the result record


class HostileService(ServiceProcess):
    """ServiceProcess with its own SEQSERVE_* settings only (none inherited from this shell), its
    output in a log file (a pipe nobody reads could fill and stall it), and optionally a
    RLIMIT_NOFILE set in the child before it starts."""

    ready_timeout_s = 180.0

    def __init__(self, models_dir: Path, env: dict[str, str], fd_limit: int | None = None, name: str = "service"):
        self.env = dict(env)
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.gettempdir()) / f"hostile-{name}-{self.port}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith("SEQSERVE_")}
        preexec = (lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))) if fd_limit else None
        self.fd_limit = fd_limit
        started = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port),
                 "--models-dir", str(models_dir), "--device", "cpu"],
                cwd=REPO_ROOT, env={**base, "SEQSERVE_LOG_LEVEL": "warning", **self.env},
                stdout=log, stderr=subprocess.STDOUT, preexec_fn=preexec)
        self.cold_start_s = self._wait_ready(started)
        self.warm_rss_mib: float | None = None

    def setting(self, name: str, default: float) -> float:
        return float(self.env.get(f"SEQSERVE_{name.upper()}", default))

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> int:
        if self.process.poll() is not None:
            return self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _probe_main(port: int, pid: int) -> None:
    """In the probe process: GET /healthz on a fresh connection every 50 ms, and the service's
    RSS; one line per sample on stdout: monotonic time, latency (s), status (0: failed), RSS (KiB).
    Stops when stdin closes."""
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    request = b"GET /healthz HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"
    status_path = Path(f"/proc/{pid}/status")
    next_at = time.monotonic()
    while not stop.is_set():
        began = time.monotonic()
        status = 0
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                data = b""
                while chunk := sock.recv(4096):
                    data += chunk
                status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        except (OSError, ValueError, IndexError):
            status = 0
        latency = time.monotonic() - began
        try:
            rss = next(int(line.split()[1]) for line in status_path.read_text().splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            rss = 0
        try:
            print(f"{began:.6f} {latency:.6f} {status} {rss}", flush=True)
        except BrokenPipeError:
            return
        next_at = max(next_at + PROBE_EVERY_S, time.monotonic())
        stop.wait(max(0.0, next_at - time.monotonic()))


class Probe:
    """The /healthz + RSS sampler, in its own process (so the attacks' own CPU use in this
    process does not inflate its latencies through the GIL)."""

    def __init__(self, server: HostileService):
        self.samples: list[tuple[float, float, int, int]] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.hostile", "--probe", str(server.port), str(server.process.pid)],
            cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        # The probe process takes a second or more to start (its imports): an attack measured
        # before its first sample would have no /healthz figure at all.
        if not self.wait_past(time.monotonic(), timeout_s=60.0):
            self.stop()
            raise RuntimeError("the /healthz probe sent no sample within 60 s")

    def _read(self) -> None:
        for line in self.process.stdout:
            parts = line.split()
            if len(parts) == 4:
                self.samples.append((float(parts[0]), float(parts[1]), int(parts[2]), int(parts[3])))

    def wait_past(self, moment: float, timeout_s: float = 10.0) -> bool:
        """Wait until a sample begun at or after `moment` has come back (False on timeout or
        if the probe process has exited)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self.process.poll() is None:
            if self.samples and self.samples[-1][0] >= moment:
                return True
            time.sleep(0.01)
        return bool(self.samples) and self.samples[-1][0] >= moment

    def window(self, began: float, ended: float) -> dict[str, Any]:
        inside = [s for s in self.samples if began <= s[0] <= ended]
        ok = [s[1] * 1000 for s in inside if s[2] == 200]
        worst = max((s for s in inside if s[2] == 200), key=lambda s: s[1], default=None)
        return {"samples": len(inside), "healthz_max_ms": round(max(ok), 1) if ok else None,
                "healthz_worst_at_s": round(worst[0] - began, 2) if worst else None,
                "healthz_over_bar": sum(1 for v in ok if v >= HEALTHZ_BAR_MS),
                "healthz_p50_ms": round(statistics.median(ok), 1) if ok else None,
                "healthz_failures": sum(1 for s in inside if s[2] != 200),
                "rss_peak_mib": round(max((s[3] for s in inside), default=0) / 1024, 1) or None}

    def stop(self) -> None:
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(timeout=5)


@dataclasses.dataclass
class Result:
    attack: str
    sent: str
    came_back: str = ""
    held: bool = False
    victim: str | None = None  # what the victim was, e.g. "client B, 1 sentence"
    victim_s: float | None = None
    victim_alone_s: float | None = None
    seconds: float | None = None  # the attack's own duration
    healthz_max_ms: float | None = None
    healthz_p50_ms: float | None = None
    healthz_failures: int | None = None
    healthz_held: bool | None = None
    rss_before_mib: float | None = None  # the service is warm then: the bar is 10% over this
    rss_after_mib: float | None = None
    rss_warm_mib: float | None = None  # of the service, after the suite's warm-up (for the drift over the run)
    rss_held: bool | None = None
    figures: dict[str, Any] = dataclasses.field(default_factory=dict)
    problems: list[str] = dataclasses.field(default_factory=list)

    def fail(self, problem: str) -> None:
        self.problems.append(problem)


def measure(server: HostileService, probe: Probe | None, attack: Callable[[HostileService], Result],
            healthz_until: Callable[[], float] | None = None) -> Result:
    """Run one attack with the probe's window and RSS around it, and judge the bars."""
    rss_before = server.rss_mib() if server.process.poll() is None else None
    began = time.monotonic()
    try:
        result = attack(server)
    except Exception as error:  # an attack that crashes is reported, the suite goes on
        result = Result(attack=getattr(attack, "__name__", "attack"), sent="(crashed)",
                        came_back=f"{type(error).__name__}: {error}")
        result.fail(f"the attack itself failed: {type(error).__name__}: {error}")
    ended = time.monotonic()
    time.sleep(0.3)  # let the service settle (an idle step loop trims its heap) before its RSS is read
    result.seconds = result.seconds if result.seconds is not None else round(ended - began, 2)
    result.rss_before_mib = round(rss_before, 1) if rss_before is not None else None
    if server.process.poll() is None:
        result.rss_after_mib = round(server.rss_mib(), 1)
    result.rss_warm_mib = round(server.warm_rss_mib, 1) if server.warm_rss_mib else None
    if result.rss_after_mib is not None and result.rss_before_mib:
        result.rss_held = result.rss_after_mib <= result.rss_before_mib * (1 + RSS_BAR)
    end = result.figures.pop("_healthz_until", None) or ended
    if probe is not None:
        window_end = max(end, began + 0.2)  # at least a few samples, however short the attack
        probe.wait_past(window_end)  # the window's last sample has come back
        stats = probe.window(began, window_end)
        result.healthz_max_ms = stats["healthz_max_ms"]
        result.healthz_p50_ms = stats["healthz_p50_ms"]
        result.healthz_failures = stats["healthz_failures"]
        result.figures["probe_samples"] = stats["samples"]
        result.figures["healthz_worst_at_s"] = stats["healthz_worst_at_s"]  # after the attack began
        result.figures["healthz_samples_over_bar"] = stats["healthz_over_bar"]
        result.figures["rss_peak_mib"] = stats["rss_peak_mib"]
        if result.figures.get("_healthz_failures_expected"):
            result.figures.pop("_healthz_failures_expected")
            failures_ok = True
        else:
            failures_ok = not result.healthz_failures
        result.healthz_held = (result.healthz_max_ms is not None and result.healthz_max_ms < HEALTHZ_BAR_MS
                               and failures_ok)
    result.figures.pop("_healthz_failures_expected", None)
    result.held = not result.problems
    return result


# ---------------------------------------------------------------------------------------------
# HTTP helpers (aiohttp: cheap per request; all on loopback)


async def _post(session, url: str, *, json_body=None, data: bytes | None = None, headers=None,
                timeout: float = 90) -> dict[str, Any]:
    import aiohttp

    began = time.perf_counter()
    headers = dict(headers or {})
    if data is not None:
        headers.setdefault("Content-Type", "application/json")
    try:
        async with session.post(url, json=json_body, data=data, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            body = await response.read()
            out = {"status": response.status, "seconds": time.perf_counter() - began, "bytes": len(body),
                   "ended_at": time.monotonic(),
                   "headers": dict(response.headers), "body": body}
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        return {"status": None, "seconds": time.perf_counter() - began, "error": type(error).__name__,
                "ended_at": time.monotonic()}
    try:
        out["json"] = json.loads(body)
    except ValueError:
        out["json"] = None
    return out


def _code(answer: dict[str, Any]) -> str:
    if answer.get("status") is None:
        return answer.get("error", "no answer")
    payload = answer.get("json")
    if isinstance(payload, dict) and "error" in payload:
        return f"{answer['status']} {payload['error']}"
    return str(answer["status"])


def _session():
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))


def post_once(server: HostileService, path: str, body: dict, headers: dict | None = None,
              timeout: float = 90) -> dict[str, Any]:
    async def run():
        async with _session() as session:
            return await _post(session, server.url + path, json_body=body, headers=headers, timeout=timeout)

    return asyncio.run(run())


def model_work(server: HostileService, model: str) -> dict[str, float]:
    """From /metrics: seconds of hops, hops, steps (model runs) and rows stepped, of one model."""
    import httpx

    names = {"seqserve_inference_seconds_sum": "hop_s", "seqserve_inference_seconds_count": "hops",
             "seqserve_batch_size_count": "steps", "seqserve_batch_size_sum": "rows"}
    out = dict.fromkeys(names.values(), 0.0)
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        name = line.split("{", 1)[0]
        if name in names and f'model="{model}"' in line:
            out[names[name]] = float(line.rsplit(" ", 1)[1])
        elif name == "seqserve_music21_calls_total" and 'call="check_tune"' in line:
            outcome = line.split('outcome="', 1)[1].split('"', 1)[0]
            out[f"tune_checks_{outcome}"] = float(line.rsplit(" ", 1)[1])
    return out


def _summary(codes: list[str]) -> str:
    counts: dict[str, int] = {}
    for code in codes:
        counts[code] = counts.get(code, 0) + 1
    return ", ".join(f"{n}x {code}" for code, n in counts.items())


# ---------------------------------------------------------------------------------------------
# Raw connections


class RawConn:
    """One raw TCP connection, watched with a selector: what came back and when it closed."""

    def __init__(self, port: int):
        self.opened_at = time.monotonic()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.setblocking(False)
        self.sent = 0
        self.received = b""
        self.first_byte_at: float | None = None
        self.closed_at: float | None = None
        self.reset = False

    def poll_read(self) -> None:
        """Read what is there (non-blocking); notes the first byte and the close."""
        while self.closed_at is None:
            try:
                chunk = self.sock.recv(65536)
            except BlockingIOError:
                return
            except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
                self.reset = True
                self.closed_at = time.monotonic()
                return
            if not chunk:
                self.closed_at = time.monotonic()
                return
            if self.first_byte_at is None:
                self.first_byte_at = time.monotonic()
            self.received += chunk

    def try_send(self, data: bytes) -> int:
        try:
            n = self.sock.send(data)
        except BlockingIOError:
            return 0
        except (ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            self.reset = True
            if self.closed_at is None:
                self.closed_at = time.monotonic()
            return 0
        self.sent += n
        return n

    def answer(self) -> tuple[int | None, dict[str, str], bytes]:
        if not self.received.startswith(b"HTTP/"):
            return None, {}, b""
        head, _, body = self.received.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
        return int(status_line.split()[1]), headers, body

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def open_many(port: int, count: int) -> list[RawConn]:
    conns = []
    for _ in range(count):
        try:
            conns.append(RawConn(port))
        except OSError:
            break
    return conns


def wait_closed(conns: list[RawConn], until: float, tick: Callable[[], None] | None = None,
                tick_every: float = 0.2) -> None:
    """Watch `conns` until all are closed or the monotonic time `until`; `tick` runs every `tick_every`."""
    selector = selectors.DefaultSelector()
    for conn in conns:
        if conn.closed_at is None:
            selector.register(conn.sock, selectors.EVENT_READ, conn)
    next_tick = time.monotonic()
    try:
        while any(c.closed_at is None for c in conns) and time.monotonic() < until:
            if tick is not None and time.monotonic() >= next_tick:
                tick()
                next_tick = time.monotonic() + tick_every
            timeout = max(0.0, min(until, next_tick if tick else until) - time.monotonic())
            for key, _ in selector.select(timeout=min(timeout, 0.2)):
                conn = key.data
                conn.poll_read()
                if conn.closed_at is not None:
                    selector.unregister(conn.sock)
    finally:
        selector.close()


def _json_body(body: bytes) -> dict | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------------------------------------
# Attacks on input: validation bomb, NFKC prompt, MIDI limits


def validation_bomb_body(keys: int = 200_000) -> bytes:
    """A JSON object of `keys` unknown keys (2.8 MB for 200,000)."""
    return ("{" + ", ".join(f'"k{i:06d}": 0' for i in range(keys)) + "}").encode()


def attack_validation_bomb(server: HostileService, concurrent: int = 1, key: str | None = None) -> Result:
    body = validation_bomb_body()
    result = Result(attack=f"validation bomb x{concurrent}",
                    sent=f"{concurrent}x POST /sentiment, {len(body) / 1e6:.1f} MB, 200,000 unknown keys")

    async def run():
        async with _session() as session:
            return await asyncio.gather(*(_post(session, server.url + "/sentiment", data=body,
                                                headers=auth(key) if key else None, timeout=60)
                                          for _ in range(concurrent)))

    answers = asyncio.run(run())
    codes = [_code(a) for a in answers]
    worst = max(a["seconds"] for a in answers)
    sizes = [a.get("bytes") for a in answers]
    result.came_back = f"{_summary(codes)}; worst {worst:.2f} s; {max(s or 0 for s in sizes)} B answer"
    result.figures.update(statuses=codes, seconds=[round(a["seconds"], 3) for a in answers], response_bytes=sizes)
    first = answers[0].get("json") or {}
    fields = first.get("fields") or []
    result.figures["fields_named"] = len(fields)
    result.figures["message"] = str(first.get("message", ""))[:300]
    if any(c != "422 validation_error" for c in codes):
        result.fail(f"expected 422 validation_error for every request, got {codes}")
    if len(fields) > 3:
        result.fail(f"{len(fields)} fields named (at most 3 unknown keys should be named)")
    if not all("extra" in f.get("message", "").lower() or "json strings" in f.get("message", "").lower()
               for f in fields):
        result.fail("the answer names neither the unknown keys nor the body's count of strings")
    limit = 0.5 * concurrent + 0.5
    if worst > limit:
        result.fail(f"slowest answer {worst:.2f} s (> {limit:.1f} s for {concurrent} at once)")
    return result


NFKC_PROMPT = "\u33af" * 5000  # SQUARE RAD OVER S SQUARED: 6 characters each after NFKC


async def _bystander_stream(session, server: HostileService, seed: int, headers: dict) -> dict[str, Any]:
    """One streamed generation of 600 characters: its time, and the longest gap between events."""
    import aiohttp

    began = time.perf_counter()
    last, gaps, events = began, [], []
    async with session.post(server.url + "/generate-music", json={"max_length": 600, "seed": seed, "stream": True},
                            headers=headers, timeout=aiohttp.ClientTimeout(total=60)) as response:
        async for line in response.content:
            line = line.decode().strip()
            if line.startswith("event: "):
                now = time.perf_counter()
                gaps.append(now - last)
                last = now
                events.append(line[7:])
    return {"status": response.status, "seconds": time.perf_counter() - began,
            "max_gap_s": max(gaps[1:], default=0.0), "last_event": events[-1] if events else None}


def _with_bystanders(server: HostileService, streams: int, headers: dict, attack, result: Result) -> list[dict]:
    """`streams` bystander streams alone, then again while `attack(session)` (async, returning its
    answers) runs; their figures go into `result`, the attack's answers are returned."""

    async def run(with_attack: bool):
        async with _session() as session:
            tasks = [asyncio.ensure_future(_bystander_stream(session, server, seed, headers)) for seed in range(streams)]
            answers = []
            if with_attack:
                await asyncio.sleep(0.3)  # the streams are generating
                answers = await attack(session)
            return await asyncio.gather(*tasks), answers

    alone, _ = asyncio.run(run(False))
    during, answers = asyncio.run(run(True))
    gap_alone = max(s["max_gap_s"] for s in alone)
    gap_during = max(s["max_gap_s"] for s in during)
    result.figures.update(streams_alone_s=[round(s["seconds"], 2) for s in alone],
                          streams_during_s=[round(s["seconds"], 2) for s in during],
                          streams_max_gap_alone_s=round(gap_alone, 3), streams_max_gap_during_s=round(gap_during, 3),
                          streams_last_events=[s["last_event"] for s in during])
    result.victim_s = round(max(s["seconds"] for s in during), 3)
    result.victim_alone_s = round(max(s["seconds"] for s in alone), 3)
    if any(s["status"] != 200 or s["last_event"] != "result" for s in during):
        result.fail(f"a bystander stream did not end with a result: {[(s['status'], s['last_event']) for s in during]}")
    if gap_during > max(0.5, 3 * gap_alone):
        result.fail(f"bystander streams stalled {gap_during:.2f} s between events (alone at most {gap_alone:.2f} s)")
    return answers


def attack_nfkc_prompt(server: HostileService, streams: int = 2, key: str | None = None,
                       bystander_key: str | None = None) -> Result:
    """5,000 x U+33AF (30,000 characters after NFKC) to /generate-music, five times, while
    `streams` other music streams run: 422 fast, the streams unaffected."""
    result = Result(attack="NFKC prompt", sent=f"5x /generate-music prompt 5,000 x U+33AF during {streams} streams",
                    victim=f"{streams} music streams of 600 chars")

    async def attack(session):
        answers = []
        for _ in range(5):
            answers.append(await _post(session, server.url + "/generate-music",
                                       json_body={"prompt": NFKC_PROMPT, "max_length": 10},
                                       headers=auth(key) if key else None, timeout=30))
            await asyncio.sleep(0.05)
        return answers

    attacks = _with_bystanders(server, streams, auth(bystander_key) if bystander_key else {}, attack, result)
    codes = [_code(a) for a in attacks]
    worst = max(a["seconds"] for a in attacks)
    result.came_back = (f"{_summary(codes)}; worst {worst * 1000:.0f} ms; streams' longest gap "
                        f"{result.figures['streams_max_gap_during_s']:.2f} s (alone "
                        f"{result.figures['streams_max_gap_alone_s']:.2f} s)")
    first = attacks[0].get("json") or {}
    result.figures.update(statuses=codes, seconds=[round(a["seconds"], 3) for a in attacks],
                          message=str(first.get("message", ""))[:200])
    if any(c != "422 validation_error" for c in codes):
        result.fail(f"expected 422 validation_error, got {codes}")
    elif "NFKC" not in result.figures["message"]:
        result.fail(f"the 422 does not name the NFKC limit: {result.figures['message']!r}")
    if worst > 0.5:
        result.fail(f"slowest 422 took {worst:.2f} s (> 0.5 s)")
    return result


def attack_long_prompts(server: HostileService, streams: int = 2, count: int = 4, key: str | None = None,
                        bystander_key: str | None = None) -> Result:
    """(Not in the issue's list.) `count` valid prompts of 5,000 characters (the limit) at once,
    while `streams` other music streams run: do the other streams stall while they are read?"""
    prompts = [midi_tune(5000).replace("T:t\n", f"T:t{i}\n", 1)[:5000] for i in range(count)]  # distinct: read apart
    result = Result(attack="5,000-char prompts", sent=f"{count}x /generate-music with a valid 5,000-char prompt, "
                                                      f"max_length 10, at once, during {streams} streams",
                    victim=f"{streams} music streams of 600 chars")

    async def attack(session):
        return await asyncio.gather(*(_post(session, server.url + "/generate-music",
                                            json_body={"prompt": prompts[i], "max_length": 10, "seed": i},
                                            headers=auth(key) if key else None, timeout=60) for i in range(count)))

    answers = _with_bystanders(server, streams, auth(bystander_key) if bystander_key else {}, attack, result)
    codes = [_code(a) for a in answers]
    result.came_back = (f"{_summary(codes)}, worst {max(a['seconds'] for a in answers):.2f} s; streams' longest gap "
                        f"{result.figures['streams_max_gap_during_s']:.2f} s (alone "
                        f"{result.figures['streams_max_gap_alone_s']:.2f} s)")
    result.figures.update(statuses=codes, seconds=[round(a["seconds"], 3) for a in answers])
    if any(c != "200" for c in codes):
        result.fail(f"expected 200 for prompts within the limit, got {codes}")
    return result


def midi_tune(chars: int) -> str:
    tune = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n" + "CDEF GABc|" * 2000
    return tune[:chars]


def attack_midi_oversized(server: HostileService, key: str | None = None) -> Result:
    tune = midi_tune(19_000)
    result = Result(attack="MIDI 19,000 chars x4", sent="4x POST /generate-music/midi, a valid 19,000-char tune, at once")

    async def run():
        async with _session() as session:
            return await asyncio.gather(*(_post(session, server.url + "/generate-music/midi", json_body={"abc": tune},
                                                headers=auth(key) if key else None, timeout=60) for _ in range(4)))

    answers = asyncio.run(run())
    codes = [_code(a) for a in answers]
    worst = max(a["seconds"] for a in answers)
    result.came_back = f"{_summary(codes)}; worst {worst * 1000:.0f} ms"
    first = answers[0].get("json") or {}
    result.figures.update(statuses=codes, seconds=[round(a["seconds"], 3) for a in answers],
                          fields=first.get("fields"))
    locs = [f.get("loc") for f in first.get("fields") or []]
    if any(c != "422 validation_error" for c in codes) or ["body", "abc"] not in locs:
        result.fail(f"expected 422 validation_error on body.abc (schema limit), got {codes} {locs}")
    if worst > 0.5:
        result.fail(f"slowest answer {worst:.2f} s (> 0.5 s: music21 must not even start)")
    return result


def attack_midi_at_limit(server: HostileService, concurrent: int = 1, key: str | None = None) -> Result:
    tune = midi_tune(2_000)
    timeout = server.setting("music21_timeout_s", 5.0)
    result = Result(attack=f"MIDI 2,000 chars x{concurrent}",
                    sent=f"{concurrent}x POST /generate-music/midi, a valid 2,000-char tune" +
                         (", at once" if concurrent > 1 else ""))

    async def run():
        async with _session() as session:
            return await asyncio.gather(*(_post(session, server.url + "/generate-music/midi", json_body={"abc": tune},
                                                headers=auth(key) if key else None, timeout=60)
                                          for _ in range(concurrent)))

    answers = asyncio.run(run())
    codes = [_code(a) for a in answers]
    worst = max(a["seconds"] for a in answers)
    midi = [a for a in answers if a["status"] == 200]
    result.came_back = f"{_summary(codes)}; worst {worst:.2f} s" + (
        f"; {midi[0]['bytes']} B audio/midi" if midi else "")
    result.figures.update(statuses=codes, seconds=[round(a["seconds"], 3) for a in answers],
                          content_type=answers[0].get("headers", {}).get("Content-Type"))
    if any(c != "200" and c != "422 too_complex" for c in codes):
        result.fail(f"expected 200 (or 422 too_complex past the music21 limit), got {codes}")
    if midi and not midi[0]["body"].startswith(b"MThd"):
        result.fail("the 200 answer is not a MIDI file")
    # music21 runs one call at a time per worker: each call within its time limit, queued ones after.
    bound = concurrent * (timeout + 0.5)
    if worst > bound:
        result.fail(f"slowest answer {worst:.2f} s (> {bound:.1f} s: {concurrent} x the music21 time limit)")
    return result


# ---------------------------------------------------------------------------------------------
# Attacks on access: CORS refusal, X-Forwarded-For and the rate limit


def attack_cors_refusal(server: HostileService) -> Result:
    import httpx

    result = Result(attack="CORS refusal", sent="OPTIONS /sentiment preflight from https://evil.example (and ok.example)")
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    began = time.perf_counter()
    evil = httpx.options(server.url + "/sentiment", headers={"Origin": "https://evil.example", **preflight}, timeout=10)
    seconds = time.perf_counter() - began
    ok = httpx.options(server.url + "/sentiment", headers={"Origin": "https://ok.example", **preflight}, timeout=10)
    body = _json_body(evil.content)
    result.came_back = (f"evil: {evil.status_code} {evil.headers.get('content-type')} "
                        f"{(body or {}).get('error', evil.text[:40])!s}; ok: {ok.status_code}")
    result.figures.update(evil_status=evil.status_code, evil_content_type=evil.headers.get("content-type"),
                          evil_body=evil.text[:300], evil_seconds=round(seconds, 3), ok_status=ok.status_code,
                          ok_allow_origin=ok.headers.get("access-control-allow-origin"))
    if evil.status_code != 400 or not (evil.headers.get("content-type") or "").startswith("application/json") \
            or not body or body.get("error") != "cors_refused" or "message" not in body:
        result.fail(f"refused preflight is not 400 JSON cors_refused: {evil.status_code} {evil.text[:120]!r}")
    if "access-control-allow-origin" in evil.headers:
        result.fail("the refused preflight carries Access-Control-Allow-Origin")
    if ok.status_code != 200 or ok.headers.get("access-control-allow-origin") != "https://ok.example":
        result.fail(f"the allowed origin's preflight did not pass: {ok.status_code}")
    return result


def attack_forwarded_for(server: HostileService, limit: int | None = None) -> Result:
    """Requests that each claim another client in X-Forwarded-For: one bucket (the peer's) all
    the same, so the rate limit stops them after at most `limit` of them."""
    import httpx

    limit = limit or int(server.setting("rate_limit_per_minute", 0))
    result = Result(attack="X-Forwarded-For", sent=f"up to {limit + 10}x GET /v1/models, each a new X-Forwarded-For "
                                                  f"(rate limit {limit}/min)")
    statuses = []
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for i in range(limit + 10):
            response = client.get("/v1/models", headers={"X-Forwarded-For": f"10.{i // 250}.{i % 250}.7"})
            statuses.append(response.status_code)
            if response.status_code == 429 and statuses.count(429) >= 5:
                break
    first = statuses.index(429) + 1 if 429 in statuses else None
    result.came_back = (f"first 429 at request {first}" if first else "no 429") + f"; {_summary([str(s) for s in statuses])}"
    result.figures.update(statuses=statuses, first_429_at=first, rate_limit_per_minute=limit)
    if first is None or first > limit + 1:
        result.fail(f"new X-Forwarded-For values got fresh rate-limit buckets: no 429 within {limit + 1} requests")
    elif any(s != 429 for s in statuses[first - 1:]):
        result.fail(f"after the first 429, a new X-Forwarded-For value got through: {statuses[first - 1:]}")
    if any(s not in (200, 429) for s in statuses):
        result.fail(f"unexpected statuses {sorted(set(statuses))}")
    return result


# ---------------------------------------------------------------------------------------------
# Attacks on connections


def attack_slowloris_headers(server: HostileService, count: int = 100) -> Result:
    limit = server.setting("header_timeout_s", 10)
    result = Result(attack="slowloris headers", sent=f"{count} connections, a header line every 0.2 s, never the end")
    conns = open_many(server.port, count)
    try:
        for conn in conns:
            conn.try_send(b"GET /healthz HTTP/1.1\r\nHost: slow\r\n")
        n = [0]

        def trickle():
            n[0] += 1
            for conn in conns:
                if conn.closed_at is None:
                    conn.try_send(b"X-Slow-%d: 1\r\n" % n[0])

        wait_closed(conns, time.monotonic() + limit + 5, tick=trickle)
    finally:
        for conn in conns:
            conn.close()
    lives = [c.closed_at - c.opened_at for c in conns if c.closed_at is not None]
    still_open = sum(1 for c in conns if c.closed_at is None)
    answered = sum(1 for c in conns if c.received)
    result.came_back = (f"{len(lives)}/{len(conns)} closed after {min(lives, default=0):.2f}-"
                        f"{max(lives, default=0):.2f} s; {answered} got bytes")
    result.figures.update(opened=len(conns), closed=len(lives), still_open=still_open, answered=answered,
                          close_after_s_min=round(min(lives, default=0), 2),
                          close_after_s_max=round(max(lives, default=0), 2), header_timeout_s=limit,
                          lines_sent_each=n[0])
    if len(conns) < count:
        result.fail(f"only {len(conns)} of {count} connections could be opened")
    if still_open:
        result.fail(f"{still_open} connections still open {limit + 5:g} s later")
    if lives and max(lives) > limit + 1:
        result.fail(f"closed up to {max(lives):.2f} s after opening (header timeout {limit:g} s)")
    return result


def attack_slow_body(server: HostileService, count: int = 20, key: str | None = "key-a") -> Result:
    limit = server.setting("body_timeout_s", 30)
    result = Result(attack="slow body", sent=f"{count} POST /sentiment, Content-Length 100000, 100 B then nothing; "
                                             f"+1 trickling 1 B/s")
    head = (b"POST /sentiment HTTP/1.1\r\nHost: slow\r\nContent-Type: application/json\r\n" +
            (f"Authorization: Bearer {key}\r\n".encode() if key else b"") + b"Content-Length: 100000\r\n\r\n")
    conns = open_many(server.port, count)
    trickler = RawConn(server.port)
    try:
        began = time.monotonic()
        for conn in conns + [trickler]:
            conn.try_send(head + b'{"text": "' + b"a" * 90)
        last = [time.monotonic()]

        def trickle():
            if time.monotonic() - last[0] >= 1.0 and trickler.closed_at is None:
                trickler.try_send(b"a")
                last[0] = time.monotonic()
                trickler.poll_read()

        wait_closed(conns, began + limit + 5, tick=trickle)
        trickle_until = began + 3 * limit
        while time.monotonic() < trickle_until and trickler.closed_at is None:
            trickle()
            time.sleep(0.1)
    finally:
        for conn in conns + [trickler]:
            conn.close()
    answers = [c.answer() for c in conns]
    statuses = [a[0] for a in answers]
    waits = [c.first_byte_at - c.opened_at for c in conns if c.first_byte_at is not None]
    json_ok = all(a[1].get("content-type") == "application/json" and (_json_body(a[2]) or {}).get("error") ==
                  "request_timeout" for a in answers if a[0] == 408)
    result.came_back = (f"{_summary([str(s) for s in statuses])} after {min(waits, default=0):.2f}-"
                        f"{max(waits, default=0):.2f} s; trickler " +
                        ("closed" if trickler.closed_at else f"still open after {3 * limit:g} s"))
    result.figures.update(statuses=statuses, answer_after_s_max=round(max(waits, default=0), 2),
                          body_timeout_s=limit, json=json_ok,
                          body=answers[0][2].decode(errors="replace")[:200] if answers else None,
                          trickler_open_after_s=None if trickler.closed_at else 3 * limit,
                          trickler_bytes_sent=trickler.sent)
    if any(s != 408 for s in statuses):
        result.fail(f"expected 408 for every stalled body, got {statuses}")
    if not json_ok:
        result.fail("a 408 answer is not JSON request_timeout")
    if waits and max(waits) > limit + 1:
        result.fail(f"408 came up to {max(waits):.2f} s after the last byte (body timeout {limit:g} s)")
    return result


def attack_idle_connections(server: HostileService, count: int = 500) -> Result:
    limit = server.setting("header_timeout_s", 10)
    result = Result(attack=f"{count} idle connections", sent=f"{count} connections that send nothing")
    began = time.monotonic()
    conns = open_many(server.port, count)
    opened_s = time.monotonic() - began
    try:
        wait_closed(conns, time.monotonic() + limit + 5)
    finally:
        for conn in conns:
            conn.close()
    lives = [c.closed_at - c.opened_at for c in conns if c.closed_at is not None]
    early = sum(1 for t in lives if t < 0.5 * limit)
    result.came_back = f"{len(lives)}/{len(conns)} closed after {min(lives, default=0):.2f}-{max(lives, default=0):.2f} s"
    result.figures.update(opened=len(conns), open_s=round(opened_s, 2), closed=len(lives), closed_early=early,
                          close_after_s_max=round(max(lives, default=0), 2), header_timeout_s=limit)
    if len(conns) < count:
        result.fail(f"only {len(conns)} of {count} connections could be opened")
    if len(lives) < len(conns):
        result.fail(f"{len(conns) - len(lives)} idle connections still open {limit + 5:g} s later")
    if lives and max(lives) > limit + 1:
        result.fail(f"idle connections closed up to {max(lives):.2f} s after opening (header timeout {limit:g} s)")
    if early:
        result.fail(f"{early} connections (under the cap) were closed before the header timeout")
    return result


def attack_unfinished_headers(server: HostileService, count: int = 10, stop_at: int = 1 << 20) -> Result:
    """`count` connections each sending a 50 MB header that never ends (stopping at `stop_at`
    bytes, or when the server answers or closes)."""
    max_header = int(server.setting("max_header_bytes", 16384))
    result = Result(attack=f"unfinished 50 MB headers x{count}",
                    sent=f"{count} connections, GET /healthz + X-Big: a... (50 MB announced, stop at "
                         f"{stop_at >> 20} MiB or the answer)")
    rss_before = server.rss_mib()
    conns = open_many(server.port, count)
    chunk = b"a" * 65536
    try:
        for conn in conns:
            conn.try_send(b"GET /healthz HTTP/1.1\r\nHost: big\r\nX-Big: ")
        deadline = time.monotonic() + 15
        selector = selectors.DefaultSelector()
        sending = set(conns)
        for conn in conns:
            selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)
        while sending and time.monotonic() < deadline:
            for key, events in selector.select(timeout=0.2):
                conn = key.data
                if events & selectors.EVENT_READ:
                    conn.poll_read()
                if conn.received or conn.closed_at is not None or conn.sent >= stop_at:
                    sending.discard(conn)  # answered, closed, or enough sent: stop sending
                    selector.unregister(conn.sock)
                elif events & selectors.EVENT_WRITE:
                    conn.try_send(chunk)
        selector.close()
        rss_peak = server.rss_mib()
        wait_closed(conns, time.monotonic() + 5)  # the answers' ends, the servers' closes
    finally:
        for conn in conns:
            conn.close()
    answers = [c.answer() for c in conns]
    statuses = [a[0] for a in answers]
    sent = [c.sent for c in conns]
    json_ok = all((_json_body(a[2]) or {}).get("error") == "headers_too_large" for a in answers if a[0] == 431)
    result.came_back = (f"{_summary([str(s) for s in statuses])}; sent {min(sent) / 1024:.0f}-{max(sent) / 1024:.0f} KiB "
                        "each before the answer")
    result.figures.update(statuses=statuses, sent_bytes=sent, max_header_bytes=max_header, json=json_ok,
                          rss_before_mib=round(rss_before, 1), rss_while_mib=round(rss_peak, 1))
    if any(s != 431 for s in statuses):
        result.fail(f"expected 431 on every connection, got {statuses}")
    if not json_ok:
        result.fail("a 431 answer is not JSON headers_too_large")
    if rss_peak - rss_before > 8:
        result.fail(f"RSS grew {rss_peak - rss_before:.1f} MiB while the headers came")
    return result


def attack_complete_huge_header(server: HostileService, megabytes: int = 10) -> Result:
    result = Result(attack=f"complete {megabytes} MB header", sent=f"GET /healthz with a {megabytes} MB X-Big header, "
                                                                   "then the blank line")
    data = b"GET /healthz HTTP/1.1\r\nHost: big\r\nX-Big: " + b"a" * (megabytes * 1_000_000) + b"\r\n\r\n"
    rss_before = server.rss_mib()
    conn = RawConn(server.port)
    began = time.monotonic()
    try:
        selector = selectors.DefaultSelector()
        selector.register(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        view = memoryview(data)
        while time.monotonic() - began < 15 and conn.closed_at is None:
            for _, events in selector.select(timeout=0.2):
                if events & selectors.EVENT_READ:
                    conn.poll_read()
                if events & selectors.EVENT_WRITE and conn.sent < len(data) and conn.closed_at is None:
                    conn.try_send(view[conn.sent:conn.sent + 262144])
            if conn.sent >= len(data):
                selector.modify(conn.sock, selectors.EVENT_READ)
        selector.close()
    finally:
        conn.close()
    status, headers, body = conn.answer()
    answered_after = conn.first_byte_at - began if conn.first_byte_at else None
    result.came_back = (f"{status} {(_json_body(body) or {}).get('error', '')} after "
                        f"{answered_after if answered_after is not None else float('nan'):.2f} s; "
                        f"{conn.sent / 1e6:.1f} of {len(data) / 1e6:.1f} MB sent" + ("; reset" if conn.reset else ""))
    result.figures.update(status=status, content_type=headers.get("content-type"), body=body.decode(errors="replace")[:200],
                          answer_after_s=round(answered_after, 3) if answered_after is not None else None,
                          sent_bytes=conn.sent, reset=conn.reset, rss_before_mib=round(rss_before, 1),
                          rss_after_mib=round(server.rss_mib(), 1))
    if status != 431 or (_json_body(body) or {}).get("error") != "headers_too_large":
        result.fail(f"expected 431 JSON headers_too_large, got {status} {body[:100]!r}")
    if answered_after is not None and answered_after > 1:
        result.fail(f"the 431 came {answered_after:.2f} s after the first byte")
    return result


def attack_fd_exhaustion(server: HostileService, count: int = 1100) -> Result:
    """`count` idle sockets against a service whose RLIMIT_NOFILE is `server.fd_limit`: those
    over the cap are closed at once; /healthz answers once the idle ones time out."""
    import httpx

    limit = server.setting("header_timeout_s", 10)
    cap = min(int(server.setting("max_connections", 1000)), (server.fd_limit or 10**9) - 64)
    result = Result(attack=f"{count} idle sockets, fd limit {server.fd_limit}",
                    sent=f"{count} idle connections (service RLIMIT_NOFILE {server.fd_limit}, expected cap {cap})")
    began = time.monotonic()
    conns = open_many(server.port, count)
    opened_s = time.monotonic() - began
    try:
        wait_closed(conns, time.monotonic() + 0.5)
        closed_at_once = sum(1 for c in conns if c.closed_at is not None)
        refused_at_once = 0
        try:
            httpx.get(server.url + "/healthz", timeout=1)
        except httpx.HTTPError:
            refused_at_once = 1
        wait_closed(conns, began + limit + 1.0)
        recovered_at, status = None, None
        while time.monotonic() - began < limit + 10:
            try:
                status = httpx.get(server.url + "/healthz", timeout=2).status_code
            except httpx.HTTPError:
                status = None
            if status == 200:
                recovered_at = time.monotonic() - began
                break
            time.sleep(0.1)
        wait_closed(conns, time.monotonic() + 3)
    finally:
        for conn in conns:
            conn.close()
    still_open = sum(1 for c in conns if c.closed_at is None)
    result.came_back = (f"{closed_at_once} closed at once, rest after the header timeout; /healthz 200 "
                        f"{recovered_at:.2f} s after the first socket" if recovered_at is not None else
                        f"{closed_at_once} closed at once; /healthz never answered")
    result.figures.update(opened=len(conns), open_s=round(opened_s, 2), closed_at_once=closed_at_once,
                          expected_over_cap=max(0, len(conns) - cap), healthz_refused_while_full=bool(refused_at_once),
                          healthz_200_after_s=round(recovered_at, 2) if recovered_at is not None else None,
                          still_open_at_end=still_open, header_timeout_s=limit,
                          log_too_many_files="Too many open files" in server.log_tail(200_000))
    result.figures["_healthz_failures_expected"] = True  # probes over the cap are closed, by design
    if len(conns) < count:
        result.fail(f"only {len(conns)} of {count} sockets could be opened")
    expected = max(0, len(conns) - cap)
    if abs(closed_at_once - expected) > 10:
        result.fail(f"{closed_at_once} closed at once, expected about {expected} (over the cap of {cap})")
    if recovered_at is None:
        result.fail("/healthz did not answer after the idle connections timed out")
    elif recovered_at > limit + 2:
        result.fail(f"/healthz answered only {recovered_at:.2f} s after the attack began (header timeout {limit:g} s)")
    if result.figures["log_too_many_files"]:
        result.fail("the service logged 'Too many open files'")
    return result


# ---------------------------------------------------------------------------------------------
# Fairness: one client's mass of work against another's single request

ENGLISH = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp before the ships came in.",
    "My sister bought a small house near the river, and she spends her weekends painting the walls.",
    "We missed the last train home, so we walked through the quiet streets of the city until dawn.",
    "The teacher asked the students to read the first three chapters of the book before Monday.",
    "When the storm finally passed, the farmers went out to see how much of the harvest was left.",
    "I would like a cup of coffee and a piece of chocolate cake, please.",
    "The museum is closed on Tuesdays, but you can visit the garden behind it at any time.",
    "He has been learning to play the piano for two years and practises every morning before work.",
    "Nobody knew where the letter had come from, because it had no stamp and no return address.",
    "They decided to sell the car and buy bicycles for the whole family instead.",
    "The doctor told him to drink more water, sleep eight hours a night and walk every day.",
    "Our neighbours invited us to dinner on Saturday to celebrate their daughter's birthday.",
]


def long_text(seed: int, chars: int = 1000) -> str:
    out = ""
    i = seed
    while True:
        sentence = ENGLISH[i % len(ENGLISH)]
        if len(out) + len(sentence) + 1 > chars:
            return out.strip()
        out += sentence + " "
        i += 1


def attack_translation_fairness(server: HostileService, a: str = "key-a", b: str = "key-b", rounds: int = 2) -> Result:
    deadline = server.setting("request_timeout_s", 60)
    result = Result(attack="translation fairness",
                    sent="client A: 3x /translate of 32 texts of ~1,000 chars, beam 8, max_length 256, at once; "
                         f"then client B: 1 sentence ({rounds} rounds)",
                    victim="client B: 1 sentence, beam 4")
    sentence = {"text": "Where is the nearest train station?", "beam_size": 4}
    alone = [post_once(server, "/translate", sentence, auth(b), timeout=30) for _ in range(3)]
    result.victim_alone_s = round(sorted(a_["seconds"] for a_ in alone)[1], 3)
    heavy = {"texts": [long_text(i) for i in range(32)], "beam_size": 8, "max_length": 256}

    async def run():
        async with _session() as session:
            a_tasks = [asyncio.ensure_future(_post(session, server.url + "/translate", json_body=heavy, headers=auth(a),
                                                   timeout=deadline + 30)) for _ in range(3)]
            await asyncio.sleep(0.5)
            victim = await _post(session, server.url + "/translate", json_body=sentence, headers=auth(b),
                                 timeout=deadline + 30)
            victim_done = time.monotonic()
            return victim, victim_done, await asyncio.gather(*a_tasks)

    victim, victim_done, answers = asyncio.run(run())
    rss_first = server.rss_mib()
    if rounds > 1:  # the same again: memory that grows once (buffers for larger shapes) is not a leak
        for _ in range(rounds - 1):
            asyncio.run(run())
        result.figures["rss_mib_after_each_round"] = [round(rss_first, 1), round(server.rss_mib(), 1)]
    codes = [_code(x) for x in answers]
    result.victim_s = round(victim["seconds"], 3)
    a_parts = ", ".join(f"{c} in {x['seconds']:.1f} s" for c, x in zip(codes, answers))
    result.came_back = (f"A: {a_parts}; "
                        f"B: {_code(victim)} in {victim['seconds']:.2f} s")
    result.figures.update(a_statuses=codes, a_seconds=[round(x["seconds"], 2) for x in answers],
                          a_retry_after=[x.get("headers", {}).get("Retry-After") for x in answers],
                          a_messages=[str((x.get("json") or {}).get("message", ""))[:200] for x in answers
                                      if x.get("status") != 200],
                          b_status=_code(victim), text_chars=len(heavy["texts"][0]), request_timeout_s=deadline)
    if victim.get("status") != 200:
        result.fail(f"client B got {_code(victim)}")
    elif victim["seconds"] > 3.0:
        result.fail(f"client B waited {victim['seconds']:.2f} s (bar: a few seconds, alone {result.victim_alone_s} s)")
    for code, answer in zip(codes, answers):
        if code == "503 timeout" or answer.get("status") is None:
            result.fail(f"a request of A ended in {code} after {answer['seconds']:.1f} s instead of being refused "
                        "up front")
        elif code != "200" and answer["seconds"] > 2:
            result.fail(f"a request of A was refused ({code}) only after {answer['seconds']:.1f} s")
    result.figures["_healthz_until"] = victim_done
    return result


SHORT_SENTENCES = ["Where is the station?", "I am hungry.", "Tom is reading a book.", "It is raining again.",
                   "We have to go now.", "She lives in Madrid.", "Do you like coffee?", "The door is open."]


def attack_long_sentence(server: HostileService, a: str = "key-a", b: str = "key-b", requests: int = 6,
                         seconds: float = 10.0) -> Result:
    """A sentence that widens every row of the batch (128 subwords beside sentences of 4 to 25)
    must not wait for ever behind short ones: it holds them back until the batch has drained
    enough for it (`TRANSLATE_MAX_BATCH_TOKENS`). Client A keeps its queue deep (requests of 32
    sentences of mixed lengths, sent again as each is answered), so there is always a short
    sentence ready to take any room a hop frees."""
    result = Result(attack="long sentence beside short ones",
                    sent=f"client A: {requests} requests of 32 sentences (4-25 subwords) at a time, each sent again "
                         f"when answered, for {seconds:g} s; client B: one ~1,000-character text after 2 s",
                    victim="client B: one ~1,000-character text (128 subwords), beam 4")
    long_body = {"text": long_text(3), "beam_size": 4}
    alone = [post_once(server, "/translate", long_body, auth(b), timeout=60) for _ in range(3)]
    result.victim_alone_s = round(sorted(x["seconds"] for x in alone)[1], 3)
    url = server.url + "/translate"
    mixed = [text for pair in zip(ENGLISH, SHORT_SENTENCES * 20) for text in pair]

    async def run():
        async with _session() as session:
            stop, answers = time.monotonic() + seconds, []

            async def user(first: int) -> None:
                index = first
                while time.monotonic() < stop:
                    texts = [mixed[(index + i) % len(mixed)] for i in range(32)]
                    answers.append(await _post(session, url, json_body={"texts": texts, "beam_size": 4},
                                               headers=auth(a), timeout=60))
                    index += 7

            users = [asyncio.ensure_future(user(i * 5)) for i in range(requests)]
            await asyncio.sleep(2.0)
            victim = await _post(session, url, json_body=long_body, headers=auth(b), timeout=60)
            victim_done = time.monotonic()
            await asyncio.gather(*users)
            return victim, victim_done, answers

    victim, victim_done, answers = asyncio.run(run())
    codes = Counter(_code(x) for x in answers)
    result.victim_s = round(victim["seconds"], 3)
    result.came_back = (f"A: {', '.join(f'{n}x {c}' for c, n in codes.most_common())} (32 sentences each); "
                        f"B: {_code(victim)} in {victim['seconds']:.2f} s (alone {result.victim_alone_s:.2f} s)")
    result.figures.update(a_statuses=dict(codes), b_status=_code(victim), b_source_chars=len(long_body["text"]))
    if victim.get("status") != 200:
        result.fail(f"client B got {_code(victim)}")
    elif victim["seconds"] > result.victim_alone_s + 3.0:
        result.fail(f"client B waited {victim['seconds']:.2f} s (bar: its time alone, "
                    f"{result.victim_alone_s:.2f} s, plus 3 s)")
    if set(codes) != {"200"}:
        result.fail(f"client A's requests got {dict(codes)}")
    result.figures["_healthz_until"] = victim_done
    return result


def attack_music_fairness(server: HostileService, a: str = "key-a", b: str = "key-b", streams: int = 64) -> Result:
    result = Result(attack="music fairness",
                    sent=f"client A: {streams}x /generate-music max_length 5000 (not streamed); then client B: 100 chars",
                    victim="client B: 100 chars, not streamed")
    small = {"max_length": 100, "seed": 11}
    alone = [post_once(server, "/generate-music", small, auth(b), timeout=30) for _ in range(3)]
    result.victim_alone_s = round(sorted(x["seconds"] for x in alone)[1], 3)

    async def run():
        async with _session() as session:
            a_tasks = [asyncio.ensure_future(_post(session, server.url + "/generate-music",
                                                   json_body={"max_length": 5000, "seed": i}, headers=auth(a),
                                                   timeout=120)) for i in range(streams)]
            await asyncio.sleep(1.5)  # A's streams are in the batch
            refused_early = [t.result() for t in a_tasks if t.done()]
            victims = []
            for _ in range(3):
                victims.append(await _post(session, server.url + "/generate-music", json_body=small, headers=auth(b),
                                           timeout=60))
            done_at = time.monotonic()
            finished = [t.result() for t in a_tasks if t.done()]
            for task in a_tasks:  # bounded: A's work is abandoned (its connections close, the server drops it)
                task.cancel()
            await asyncio.gather(*a_tasks, return_exceptions=True)
            return victims, refused_early, finished, done_at

    victims, refused_early, finished, done_at = asyncio.run(run())
    time.sleep(1.0)
    after = post_once(server, "/generate-music", small, auth(b), timeout=30)
    times = sorted(v["seconds"] for v in victims)
    result.victim_s = round(times[1], 3)
    result.came_back = (f"A: {len(refused_early)} refused at once ({_summary([_code(x) for x in refused_early]) or '-'}), "
                        f"{streams - len(finished)} in progress when B was done (then abandoned); B: "
                        f"{_summary([_code(v) for v in victims])}, median {times[1]:.2f} s, worst {times[-1]:.2f} s")
    result.figures.update(b_seconds=[round(t, 3) for t in times], a_refused_at_once=_summary([_code(x) for x in refused_early]),
                          a_finished_before_b=len(finished), b_after_abandon_s=round(after["seconds"], 3),
                          b_after_abandon_status=_code(after))
    if any(v.get("status") != 200 for v in victims):
        result.fail(f"client B got {[_code(v) for v in victims]}")
    elif times[1] > max(1.0, 5 * result.victim_alone_s):
        result.fail(f"client B's median latency {times[1]:.2f} s (alone {result.victim_alone_s:.2f} s)")
    if after["seconds"] > max(1.0, 3 * result.victim_alone_s):
        result.fail(f"1 s after A's {streams} requests were abandoned, B still took {after['seconds']:.2f} s "
                    "(abandoned work not dropped?)")
    result.figures["_healthz_until"] = done_at
    return result


def attack_music_flood(server: HostileService, a: str = "key-a", b: str = "key-b", requests: int = 300,
                       max_length: int = 5000) -> Result:
    """More generations from one client than its share, the model's queue or the deadline allow:
    the excess is refused up front (503 overloaded + Retry-After when the work ahead would make it
    late; 429 client_busy + Retry-After past client_max_queue_size), what is admitted finishes
    (no 503 timeout after the request timeout), and client B is still served. Bounded by the
    request timeout."""
    client_cap = int(server.setting("client_max_queue_size", 256))
    deadline = server.setting("request_timeout_s", 60)
    result = Result(attack=f"music flood {max_length}",
                    sent=f"client A: {requests}x /generate-music max_length {max_length} at once; then client B: "
                         "100 chars",
                    victim="client B: 100 chars, not streamed")
    small = {"max_length": 100, "seed": 12}
    alone = [post_once(server, "/generate-music", small, auth(b), timeout=30) for _ in range(3)]
    result.victim_alone_s = round(sorted(x["seconds"] for x in alone)[1], 3)
    work_before = model_work(server, "music")

    async def run():
        async with _session() as session:
            a_tasks = [asyncio.ensure_future(_post(session, server.url + "/generate-music",
                                                   json_body={"max_length": max_length, "seed": i}, headers=auth(a),
                                                   timeout=deadline + 15)) for i in range(requests)]
            await asyncio.sleep(1.5)  # all of A's requests have arrived: admitted or refused
            victims = [await _post(session, server.url + "/generate-music", json_body=small, headers=auth(b), timeout=60)
                       for _ in range(3)]
            done_at = time.monotonic()
            await asyncio.wait(a_tasks, timeout=deadline + 20)
            for task in a_tasks:
                task.cancel()
            await asyncio.gather(*a_tasks, return_exceptions=True)
            answers = [t.result() for t in a_tasks if t.done() and not t.cancelled()]
            return answers, victims, done_at

    answers, victims, done_at = asyncio.run(run())
    work = {k: v - work_before.get(k, 0.0) for k, v in model_work(server, "music").items()}
    codes = [_code(x) for x in answers]
    refused = [x for x in answers if x.get("status") != 200 and x["seconds"] <= 2]
    refused_codes = [_code(x) for x in refused]
    late = [x for x in answers if x.get("status") != 200 and x["seconds"] > 2]
    admitted = requests - len(refused)
    no_retry = sum(1 for x in refused if x.get("status") in (429, 503) and "Retry-After" not in x.get("headers", {}))
    times = sorted(v["seconds"] for v in victims)
    result.victim_s = round(times[1], 3)
    ok = [x["seconds"] for x in answers if x.get("status") == 200]
    result.came_back = (f"A: {_summary(refused_codes) or 'none'} at once; {len(ok)}x 200 in <= "
                        f"{max(ok, default=0):.0f} s" + (f"; {_summary([_code(x) for x in late])} later" if late else "") +
                        f"; B: {_summary([_code(v) for v in victims])}, median {times[1]:.2f} s")
    result.figures.update(a_answers=_summary(codes), a_admitted=admitted,
                          a_refused_worst_s=round(max((x["seconds"] for x in refused), default=0), 2),
                          a_completed_s_max=round(max((x["seconds"] for x in answers if x.get("status") == 200),
                                                      default=0), 2),
                          b_seconds=[round(t, 3) for t in times],
                          a_retry_after=sorted({x.get("headers", {}).get("Retry-After") for x in refused}, key=str),
                          a_messages=sorted({str((x.get("json") or {}).get("message", ""))[:160] for x in refused}),
                          client_max_queue_size=client_cap)
    first_done = min((x["ended_at"] for x in answers if x.get("status") == 200), default=float("inf"))
    last_refused = max((x["ended_at"] for x in refused), default=0.0)
    if first_done < last_refused:  # some finished while others still arrived: the count says nothing
        result.figures["cap_check"] = "inconclusive: a request of A finished before the last refusal"
    elif admitted > client_cap:
        result.fail(f"{admitted} requests of one client admitted (client_max_queue_size {client_cap})")
    over = [m for m in result.figures["a_messages"] if "client_max_queue_size" in m and
            int(m.split(" has ", 1)[1].split(" ", 1)[0]) > client_cap]
    if over:
        result.fail(f"the server itself counted more than the cap in flight: {over[0]!r}")
    if not refused:
        result.fail("nothing was refused up front")
    if any(c not in ("503 overloaded", "429 client_busy") for c in refused_codes):
        result.fail(f"refusals up front other than 503 overloaded / 429 client_busy: {_summary(refused_codes)}")
    if late:
        result.fail(f"{len(late)} admitted requests of A failed later instead of being refused up front: "
                    f"{_summary([_code(x) for x in late])} after {min(x['seconds'] for x in late):.1f}-"
                    f"{max(x['seconds'] for x in late):.1f} s")
    if no_retry:
        result.fail(f"{no_retry} refusals without Retry-After")
    if len(answers) < requests:
        result.fail(f"{requests - len(answers)} of A's requests unanswered after {deadline + 20:g} s")
    if any(v.get("status") != 200 for v in victims):
        result.fail(f"client B got {[_code(v) for v in victims]}")
    elif times[1] > max(1.0, 5 * result.victim_alone_s):
        result.fail(f"client B's median latency {times[1]:.2f} s (alone {result.victim_alone_s:.2f} s)")
    result.figures["a_late"] = _summary([_code(x) for x in late])
    if work["steps"]:
        # What a step really cost (the whole hop: sampling, state, graph), and what the admitted work needed at that pace.
        step_s = work["hop_s"] / work["steps"]
        waves = -(-admitted // int(server.setting("music_max_active", 64)))
        result.figures.update(real_ms_per_step=round(step_s * 1000, 2), mean_rows_per_step=round(work["rows"] / work["steps"], 1),
                              admitted_generation_needs_s=round(waves * max_length * step_s, 1),
                              tune_checks={k[12:]: int(v) for k, v in work.items() if k.startswith("tune_checks_")})
    result.figures["_healthz_until"] = done_at
    return result


def attack_long_tune_output(server: HostileService, key: str | None = None) -> Result:
    """A complete 4,900-character tune as the prompt (a generated output holds it whole): it
    must be reported invalid unchecked (`length:`), not handed to music21 (seconds, or its
    time limit)."""
    tune = midi_tune(4900).rstrip() + "\n\n"
    result = Result(attack="4,900-char tune in output",
                    sent="/generate-music, prompt: a complete 4,900-char tune, max_length 10",
                    victim="the same without its end (no tune to check): reading the prompt")
    headers = auth(key) if key else None
    baseline = post_once(server, "/generate-music", {"prompt": tune.rstrip(), "max_length": 10, "seed": 1},
                         headers, timeout=60)
    result.victim_alone_s = round(baseline["seconds"], 3)
    answer = post_once(server, "/generate-music", {"prompt": tune, "max_length": 10, "seed": 1}, headers, timeout=60)
    result.victim_s = round(answer["seconds"], 3)
    tunes = (answer.get("json") or {}).get("tunes") or []
    first = tunes[0] if tunes else {}
    result.came_back = (f"{_code(answer)} in {answer['seconds']:.2f} s; tune valid={first.get('valid')} "
                        f"reason={str(first.get('reason'))[:60]!r}")
    result.figures.update(status=_code(answer), seconds=round(answer["seconds"], 3), tunes=len(tunes),
                          tune_chars=len(first.get("abc", "")), reason=first.get("reason"))
    if answer.get("status") != 200:
        result.fail(f"expected 200, got {_code(answer)}")
    elif not tunes or first.get("valid") is not False or not str(first.get("reason", "")).startswith("length:"):
        result.fail(f"the long tune was not reported invalid by length, unchecked: {first.get('reason')!r}")
    if answer["seconds"] > baseline["seconds"] + 0.5:
        result.fail(f"the answer took {answer['seconds']:.2f} s, {baseline['seconds']:.2f} s without a tune to "
                    "check (music21 ran on it?)")
    return result


# ---------------------------------------------------------------------------------------------
# SIGTERM with streams in flight


def attack_sigterm(server: HostileService, streams: int = 4, background: int = 124) -> Result:
    """`streams` SSE streams of 5,000 characters (plus `background` non-streamed requests of
    5,000, so that the streams outlast the grace period on a CPU: 640,000 characters, about 14 s
    at the 45,000/s of the 2026-11-29 benchmarks; 28 were enough while generation was slower,
    but not since), then SIGTERM: each stream must end with an `error` event `shutting_down`,
    and the process exit within the grace period."""
    grace = server.setting("graceful_shutdown_s", 30)
    result = Result(attack="SIGTERM with streams",
                    sent=f"{streams} SSE streams max_length 5000 (+{background} non-streamed), SIGTERM after the "
                         f"first chunks; grace {grace:g} s")
    signalled = [0.0]

    async def stream(session, key: str, seed: int) -> dict[str, Any]:
        import aiohttp

        events, data, status = [], [], None
        first_chunk = asyncio.get_running_loop().create_future()
        try:
            async with session.post(server.url + "/generate-music", json={"max_length": 5000, "seed": seed,
                                                                          "stream": True},
                                    headers=auth(key), timeout=aiohttp.ClientTimeout(total=grace + 30)) as response:
                status = response.status
                async for line in response.content:
                    line = line.decode().strip()
                    if line.startswith("event: "):
                        events.append(line[7:])
                        if not first_chunk.done():
                            first_chunk.set_result(True)
                    elif line.startswith("data: ") and events and events[-1] != "chunk":
                        data.append(line[6:])
            ended = "eof"
        except (aiohttp.ClientError, asyncio.TimeoutError) as error:
            ended = type(error).__name__
        last = events[-1] if events else None
        payload = _json_body(data[-1].encode()) if data else None
        return {"status": status, "chunks": events.count("chunk"), "last_event": last,
                "error": (payload or {}).get("error") if last == "error" else None, "ended": ended,
                "ended_after_sigterm_s": round(time.monotonic() - signalled[0], 2) if signalled[0] else None}

    async def run():
        async with _session() as session:
            # The streams first, so they are admitted before the background fills the batch: on a
            # slow machine admission refuses what the background makes late (503 overloaded),
            # and a refused stream never reaches the shutdown this attack is about.
            tasks = [asyncio.ensure_future(stream(session, KEYS[i % 2], i)) for i in range(streams)]
            await asyncio.sleep(0.3)
            load = [asyncio.ensure_future(_post(session, server.url + "/generate-music",
                                                json_body={"max_length": 5000, "seed": 100 + i}, headers=auth("key-c"),
                                                timeout=grace + 30)) for i in range(background)]
            await asyncio.sleep(1.0)
            signalled[0] = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            exit_status = await asyncio.to_thread(_wait_exit, server.process, grace + 10)
            exited_after = time.monotonic() - signalled[0]
            outcomes = await asyncio.gather(*tasks)
            background_codes = [_code(x) for x in await asyncio.gather(*load)]
            return outcomes, exit_status, exited_after, background_codes

    outcomes, exit_status, exited_after, background_codes = asyncio.run(run())
    errors = [o["error"] for o in outcomes]
    ends = [f"{o['last_event']}:{o['error']}" if o["error"] else str(o["last_event"]) for o in outcomes]
    result.came_back = (f"streams: {_summary(ends)}; "
                        f"exit {exit_status} after {exited_after:.2f} s; background: {_summary(background_codes)}")
    result.figures.update(streams=outcomes, exit_status=exit_status, exited_after_sigterm_s=round(exited_after, 2),
                          grace_s=grace, background=_summary(background_codes))
    result.figures["_healthz_until"] = signalled[0]
    if any(e != "shutting_down" for e in errors):
        result.fail(f"not every stream ended with an error event shutting_down: "
                    f"{[(o['last_event'], o['error'], o['ended']) for o in outcomes]}")
    if exit_status is None:
        result.fail(f"the process had not exited {grace + 10:g} s after SIGTERM")
    elif exited_after > grace + 1:
        result.fail(f"the process exited {exited_after:.2f} s after SIGTERM (grace {grace:g} s + 1 s)")
    elif exit_status != 0:
        result.fail(f"exit status {exit_status}")
    if any(o["chunks"] and o["last_event"] == "result" for o in outcomes):
        result.figures["note"] = "some streams finished before the cut"
    return result


def _wait_exit(process: subprocess.Popen, timeout: float) -> int | None:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return None


# ---------------------------------------------------------------------------------------------
# The suite


def warm_up(server: HostileService, key: str | None = None) -> None:
    """A little of everything, so that the RSS that follows is the warm level."""
    headers = auth(key) if key else None
    post_once(server, "/sentiment", {"texts": [long_text(i) for i in range(16)]}, headers)
    post_once(server, "/translate", {"texts": [long_text(i, 300) for i in range(8)], "beam_size": 8}, headers)
    post_once(server, "/generate-music", {"max_length": 300, "seed": 1}, headers)
    post_once(server, "/generate-music/midi", {"abc": midi_tune(1000)}, headers)
    time.sleep(0.5)
    server.warm_rss_mib = server.rss_mib()


OPEN_ATTACKS: dict[str, Callable[[HostileService], Result]] = {
    "validation_bomb": lambda s: attack_validation_bomb(s, 1),
    "validation_bomb_x4": lambda s: attack_validation_bomb(s, 4),
    "nfkc_prompt": attack_nfkc_prompt,
    "midi_oversized": attack_midi_oversized,
    "midi_at_limit": attack_midi_at_limit,
    "midi_at_limit_x4": lambda s: attack_midi_at_limit(s, 4),
    "long_tune_output": attack_long_tune_output,
    "long_prompts": attack_long_prompts,
    "cors_refusal": attack_cors_refusal,
    "forwarded_for": attack_forwarded_for,  # last: it spends the rate-limit bucket
}
KEYED_ATTACKS: dict[str, Callable[[HostileService], Result]] = {
    "translation_fairness": attack_translation_fairness,
    "long_sentence": attack_long_sentence,
    "music_fairness": attack_music_fairness,
    "music_flood": attack_music_flood,
    "music_flood_short": lambda s: attack_music_flood(s, max_length=1000),
    "slowloris_headers": attack_slowloris_headers,
    "slow_body": attack_slow_body,
    "idle_connections": attack_idle_connections,
    "unfinished_headers": attack_unfinished_headers,
    "complete_huge_header": attack_complete_huge_header,
    "fd_exhaustion": attack_fd_exhaustion,
    "sigterm": attack_sigterm,  # last: it stops the service
}
CHEAP = ["validation_bomb", "validation_bomb_x4", "nfkc_prompt", "midi_oversized", "midi_at_limit", "long_tune_output",
         "cors_refusal", "forwarded_for", "complete_huge_header"]


def run_suite(models_dir: Path, names: list[str]) -> dict[str, Any]:
    results: list[Result] = []
    servers = {}
    for label, env, fd_limit, attacks, key in (("open", OPEN_ENV, None, OPEN_ATTACKS, None),
                                               ("keyed", KEYED_ENV, KEYED_FD_LIMIT, KEYED_ATTACKS, "key-c")):
        chosen = [n for n in attacks if n in names]
        if not chosen:
            continue
        server = HostileService(models_dir, env, fd_limit=fd_limit, name=label)
        print(f"{label} service: cold start {server.cold_start_s:.1f} s, log {server.log_path}", flush=True)
        probe = Probe(server)
        try:
            warm_up(server, key)
            servers[label] = {"env": env, "fd_limit": fd_limit, "cold_start_s": round(server.cold_start_s, 2),
                              "warm_rss_mib": round(server.warm_rss_mib, 1), "log": str(server.log_path)}
            print(f"  warm RSS {server.warm_rss_mib:.0f} MiB", flush=True)
            for name in chosen:
                if server.process.poll() is not None:
                    print(f"  {name}: skipped, the service has exited", flush=True)
                    continue
                if name == "sigterm":
                    servers[label]["rss_mib_at_end"] = round(server.rss_mib(), 1)
                result = measure(server, probe, attacks[name])
                result.figures["service"] = label
                results.append(result)
                print(f"  {'HELD' if result.held else 'FAIL'}  {result.attack}: {result.came_back}", flush=True)
                for problem in result.problems:
                    print(f"        ! {problem}", flush=True)
                time.sleep(0.5)
        finally:
            probe.stop()
            if server.process.poll() is None:
                servers.setdefault(label, {})["rss_mib_at_end"] = round(server.rss_mib(), 1)
            servers.setdefault(label, {})["exit_status"] = server.stop()
    return {"results": results, "services": servers}


def _fmt(value, spec: str = "", none: str = "-") -> str:
    return none if value is None else format(value, spec)


def table(results: list[Result]) -> str:
    head = ("attack", "sent", "came back", "held", "victim s (alone)", "healthz max ms", "RSS MiB before->after")
    rows = []
    for r in results:
        victim = f"{_fmt(r.victim_s, '.2f')} ({_fmt(r.victim_alone_s, '.2f')})" if r.victim_s is not None else "-"
        health = (f"{_fmt(r.healthz_max_ms, '.0f')}" + (f" {r.healthz_failures} fail" if r.healthz_failures else "") +
                  ("" if r.healthz_held is None else (" ok" if r.healthz_held else " MISS")))
        rss = (f"{_fmt(r.rss_before_mib, '.0f')}->{_fmt(r.rss_after_mib, '.0f')}" +
               ("" if r.rss_held is None else (" ok" if r.rss_held else " MISS")))
        rows.append((r.attack, r.sent, r.came_back, "yes" if r.held else "NO", victim, health, rss))
    widths = [max(len(str(row[i])) for row in rows + [head]) for i in range(len(head))]
    widths[1] = min(widths[1], 72)
    widths[2] = min(widths[2], 100)

    def line(row) -> str:
        cells = [str(c) if len(str(c)) <= w else str(c)[:w - 1] + "…" for c, w in zip(row, widths)]
        return " | ".join(c.ljust(w) for c, w in zip(cells, widths))

    return "\n".join([line(head), "-+-".join("-" * w for w in widths)] + [line(row) for row in rows])


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hostile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--only", default="", help="comma-separated attack names, or 'cheap'; default: all")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "hostile.json")
    parser.add_argument("--probe", nargs=2, type=int, metavar=("PORT", "PID"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:
        _probe_main(*args.probe)
        return 0
    every = list(OPEN_ATTACKS) + list(KEYED_ATTACKS)
    names = every if not args.only else [n for part in args.only.split(",")
                                         for n in (CHEAP if part == "cheap" else [part])]
    unknown = sorted(set(names) - set(every))
    if unknown:
        parser.error(f"unknown attack(s) {', '.join(unknown)}; known: {', '.join(every)}")
    from benchmarks.__main__ import machine

    print(f"machine: {machine()}", flush=True)
    began = dt.datetime.now(dt.timezone.utc)
    suite = run_suite(args.models_dir, names)
    results: list[Result] = suite["results"]
    print()
    print(table(results))
    misses = [(r.attack, p) for r in results for p in r.problems]
    misses += [(r.attack, f"/healthz worst {r.healthz_max_ms} ms, {r.healthz_failures} failed (bar < "
                          f"{HEALTHZ_BAR_MS:.0f} ms)") for r in results if r.healthz_held is False]
    misses += [(r.attack, f"RSS {r.rss_before_mib} -> {r.rss_after_mib} MiB over the attack (bar +10%)")
               for r in results if r.rss_held is False]
    for label, service in suite["services"].items():
        warm, end = service.get("warm_rss_mib"), service.get("rss_mib_at_end")
        if warm and end and end > warm * (1 + RSS_BAR):
            misses.append((f"{label} service", f"RSS {warm} MiB after warm-up, {end} MiB after its last attack "
                                               f"(+{end / warm - 1:.0%}; bar +10%)"))
    print()
    if misses:
        print("did NOT hold:")
        for attack, problem in misses:
            print(f"  {attack}: {problem}")
    else:
        print("everything held")
    report = {"when": began.isoformat(timespec="seconds"), "machine": machine(), "bars": {
        "healthz_max_ms": HEALTHZ_BAR_MS, "rss_growth_over_warm": RSS_BAR}, "services": suite["services"],
        "results": [dataclasses.asdict(r) for r in results], "did_not_hold": [f"{a}: {p}" for a, p in misses]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
