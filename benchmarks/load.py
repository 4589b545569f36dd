"""The load generator: an async HTTP client (aiohttp, far cheaper per request than httpx) in
its own process; it shares the CPU with the service, so it reports its own CPU time."""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import resource
import time
from typing import Any

import aiohttp
import numpy as np


async def _closed_loop(requests: list[tuple[str, dict]], concurrency: int, duration_s: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    # Bodies are encoded once, up front: the client's CPU is the server's CPU here.
    encoded = [(url, json.dumps(body).encode()) for url, body in requests]
    feed = itertools.cycle(encoded)
    headers = {"content-type": "application/json"}
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as client:
        async def user() -> None:
            while time.perf_counter() < deadline:
                url, body = next(feed)
                started = time.perf_counter()
                try:
                    async with client.post(url, data=body, headers=headers) as response:
                        await response.read()
                        if response.status == 200:
                            latencies.append(time.perf_counter() - started)
                        else:
                            errors[str(response.status)] = errors.get(str(response.status), 0) + 1
                except (aiohttp.ClientError, TimeoutError) as error:
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
