"""The load generator: an async HTTP client in its own process (it shares the CPU with the
service, so it reports its own CPU time)."""

from __future__ import annotations

import asyncio
import itertools
import multiprocessing
import resource
import time
from typing import Any

import httpx
import numpy as np


async def _closed_loop(requests: list[tuple[str, dict]], concurrency: int, duration_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    feed = itertools.cycle(requests)
    deadline = time.perf_counter() + duration_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        async def user() -> None:
            while time.perf_counter() < deadline:
                url, body = next(feed)
                started = time.perf_counter()
                try:
                    response = await client.post(url, json=body)
                    if response.status_code == 200:
                        latencies.append(time.perf_counter() - started)
                    else:
                        errors[str(response.status_code)] = errors.get(str(response.status_code), 0) + 1
                except httpx.HTTPError as error:
                    errors[type(error).__name__] = errors.get(type(error).__name__, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {"latencies": latencies, "errors": errors, "elapsed_s": elapsed}


def _worker(requests: list[tuple[str, dict]], concurrency: int, duration_s: float, out) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF)
    result = asyncio.run(_closed_loop(requests, concurrency, duration_s))
    after = resource.getrusage(resource.RUSAGE_SELF)
    result["cpu_s"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    out.put(result)


def run_load(url: str | None, bodies: list[dict], concurrency: int, duration_s: float,
             requests: list[tuple[str, dict]] | None = None) -> dict[str, Any]:
    """`concurrency` users, each sending the next body (to `url`, or the next (url, body) of
    `requests`) as soon as its last answer came, for `duration_s`; returns requests/s, latency
    percentiles (ms), errors and the client's CPU share."""
    requests = requests or [(url, body) for body in bodies]
    queue: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    process = multiprocessing.get_context("spawn").Process(target=_worker,
                                                           args=(requests, concurrency, duration_s, queue))
    process.start()
    result = queue.get(timeout=duration_s + 300)
    process.join()
    latencies = np.array(result["latencies"]) * 1000
    p50, p95, p99 = (np.percentile(latencies, q) if len(latencies) else float("nan") for q in (50, 95, 99))
    return {"concurrency": concurrency, "requests": len(latencies), "requests_per_s": len(latencies) / result["elapsed_s"],
            "p50_ms": float(p50), "p95_ms": float(p95), "p99_ms": float(p99), "errors": result["errors"],
            "client_cpu_share": result["cpu_s"] / result["elapsed_s"]}
