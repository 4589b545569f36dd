"""Adaptive micro-batching: concurrent requests share one model run.

Items wait in a bounded queue; one worker takes the first item, then gathers more until the
batch is full or the first item has waited `max_wait_s` (no wait at all while requests
arrive further apart than that: company is then unlikely and waiting is pure latency), and
runs the whole batch in a thread so the event loop stays free. Each item carries a future that gets its own result,
or the batch's exception: a failing batch fails only the requests in it. A full queue
refuses at once (QueueFull) instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.metrics import Metrics
from service.request_log import note

In = TypeVar("In")
Out = TypeVar("Out")


async def cancel_worker(worker: asyncio.Task | None) -> None:
    """Cancel a background worker task and wait until it has stopped."""
    if worker is not None:
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass


class QueueFull(Exception):
    """The model's queue cannot take these items now; the client should retry later."""


@dataclass
class _Pending(Generic[In]):
    item: In
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    batch_size: int = 0  # of the batch it ran in


class MicroBatcher(Generic[In, Out]):
    def __init__(self, name: str, process: Callable[[list[In]], Sequence[Out]], metrics: Metrics,
                 max_batch_size: int, max_wait_s: float, max_queue_size: int):
        self.name = name
        self.process = process
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self._queue: asyncio.Queue[_Pending[In]] = asyncio.Queue(maxsize=max_queue_size)
        # One thread per model: ONNX Runtime parallelises inside a run already.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self._worker: asyncio.Task | None = None
        # Mean time between arrivals (exponentially weighted): when requests come further
        # apart than max_wait_s, waiting for company only adds latency, so a batch goes at once.
        self._mean_gap_s = max_wait_s
        self._last_arrival = time.perf_counter()

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        await cancel_worker(self._worker)
        self._worker = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(QueueFull(f"{self.name} is shutting down"))
        self._executor.shutdown(wait=True)

    async def submit_many(self, items: Sequence[In]) -> list[Out]:
        """Queue all items or none (a request is never half admitted), then await each result."""
        if self._worker is None:
            raise QueueFull(f"{self.name} is not running")
        if self._queue.qsize() + len(items) > self.max_queue_size:
            self.metrics.rejected.labels(self.name).inc(len(items))
            raise QueueFull(f"{self.name} queue is full ({self.max_queue_size} items)")
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        self._mean_gap_s = 0.8 * self._mean_gap_s + 0.2 * min(now - self._last_arrival, 1.0)
        self._last_arrival = now
        pending = [_Pending(item, loop.create_future()) for item in items]
        for entry in pending:
            self._queue.put_nowait(entry)
        self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
        try:
            results = list(await asyncio.gather(*(entry.future for entry in pending)))
            note(batch_size=max(entry.batch_size for entry in pending))
            return results
        finally:
            # If the caller went away, its items leave the queue's work: the worker skips
            # futures that are already cancelled.
            for entry in pending:
                entry.future.cancel()

    async def _next_batch(self) -> list[_Pending[In]]:
        first = await self._queue.get()
        batch = [first]
        waits = self._mean_gap_s < self.max_wait_s  # company is likely within max_wait_s
        deadline = first.enqueued + (self.max_wait_s if waits else 0.0)
        while len(batch) < self.max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return [entry for entry in batch if not entry.future.done()]

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            self.metrics.queue_depth.labels(self.name).set(self._queue.qsize())
            if not batch:
                continue
            started = time.perf_counter()
            for entry in batch:
                self.metrics.queue_wait_seconds.labels(self.name).observe(started - entry.enqueued)
            self.metrics.batch_size.labels(self.name).observe(len(batch))
            for entry in batch:
                entry.batch_size = len(batch)
            try:
                results: Any = await loop.run_in_executor(self._executor, self.process, [e.item for e in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
            except Exception as error:  # the batch fails, the worker lives on
                for entry in batch:
                    if not entry.future.done():
                        entry.future.set_exception(error)
            else:
                for entry, result in zip(batch, results):
                    if not entry.future.done():
                        entry.future.set_result(result)
            finally:
                self.metrics.inference_seconds.labels(self.name).observe(time.perf_counter() - started)
