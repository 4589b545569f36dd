"""Adaptive micro-batching: concurrent requests share one model run.

Items wait in a fair queue (one FIFO per client, taken round-robin: see service.fairness); one
worker takes the first item, then gathers more until the batch is full or the first item has
waited `max_wait_s` (no wait at all while requests arrive further apart than that: company is
then unlikely and waiting is pure latency), and runs the whole batch in a thread so the event
loop stays free. With several lanes (one `process` each, e.g. one single-thread session each),
as many batches run at once: while one lane runs a batch, the next gathers for another lane.
Each item carries a future that gets its own result, or the batch's exception: a failing
batch fails only the requests in it. Admission refuses at once what the
queue cannot take, what one client may not add, and what could not finish before the request
deadline, instead of letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from service.errors import QueueFull
from service.fairness import Admission, FairQueue, StepTimes, fair_share
from service.metrics import ModelMetrics
from service.request_log import note

In = TypeVar("In")
Out = TypeVar("Out")

ANONYMOUS = "-"  # the client of work that names none (warm-up, tests)


async def cancel_worker(worker: asyncio.Task | None) -> None:
    """Cancel a background worker task and wait until it has stopped."""
    if worker is not None:
        worker.cancel()
        try:
            await worker
        except asyncio.CancelledError:
            pass


@dataclass
class _Pending(Generic[In]):
    item: In
    future: asyncio.Future
    client: str = ANONYMOUS
    enqueued: float = field(default_factory=time.perf_counter)
    batch_size: int = 0  # of the batch it ran in


class MicroBatcher(Generic[In, Out]):
    def __init__(self, name: str, process: Callable[[list[In]], Sequence[Out]] | Sequence[Callable[[list[In]], Sequence[Out]]],
                 metrics: ModelMetrics, max_batch_size: int, max_wait_s: float, max_queue_size: int,
                 client_max_queue_size: int | None = None, deadline_s: float = 0.0):
        self.name = name
        self.lanes = list(process) if isinstance(process, (list, tuple)) else [process]
        self.metrics = metrics
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.admission = Admission(name, metrics, max_queue_size, client_max_queue_size or max_queue_size, deadline_s)
        self._waiting: FairQueue[_Pending[In]] = FairQueue()
        self._arrived = asyncio.Event()
        self._gathering: list[_Pending[In]] = []  # the batch being gathered
        self._in_lanes: dict[int, list[_Pending[In]]] = {}  # lane -> the batch it runs
        self.batch_times = StepTimes()  # seconds per batch run (in one lane), by batch size
        # One thread per lane: ONNX Runtime parallelises inside a run already.
        self._executors = [ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}-{lane}")
                           for lane in range(len(self.lanes))]
        self._worker: asyncio.Task | None = None
        self._batches: set[asyncio.Task] = set()
        # Mean time between arrivals (exponentially weighted): when requests come further
        # apart than max_wait_s, waiting for company only adds latency, so a batch goes at once.
        self._mean_gap_s = max_wait_s
        self._last_arrival = time.perf_counter()

    @property
    def _running(self) -> list[_Pending[In]]:
        """Items taken from the queue: gathering into a batch or running in a lane."""
        return self._gathering + [entry for batch in self._in_lanes.values() for entry in batch]

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"batcher-{self.name}")

    async def stop(self) -> None:
        await cancel_worker(self._worker)
        self._worker = None
        if self._batches:  # batches in lanes finish (a thread cannot be stopped midway)
            await asyncio.gather(*self._batches, return_exceptions=True)
        for pending in self._waiting.clear():
            if not pending.future.done():
                pending.future.set_exception(QueueFull(f"{self.name} is shutting down"))
        for executor in self._executors:
            executor.shutdown(wait=True)

    def _in_flight(self, client: str | None = None) -> int:
        running = sum(1 for p in self._running if client is None or p.client == client)
        return running + (len(self._waiting) if client is None else self._waiting.count(client))

    def estimate_s(self, client: str, items: int) -> tuple[float | None, float | None]:
        """Seconds until `items` more from `client` would be done: on an idle model, and now
        (the client's fair share of each batch, behind the batch that is running)."""
        per_batch = self.batch_times.seconds(self.max_batch_size)
        if per_batch is None:
            return None, None
        alone = math.ceil(items / self.max_batch_size) * per_batch
        clients = len(set(self._waiting.clients()) | {p.client for p in self._running} | {client})
        batches = min(math.ceil((self._in_flight(client) + items) / fair_share(self.max_batch_size, clients)),
                      math.ceil((self._in_flight() + items) / self.max_batch_size))
        # Lanes run batches side by side: the work ahead drains `lanes` batches at a time.
        return alone, math.ceil((batches + len(self._in_lanes)) / len(self.lanes)) * per_batch

    async def submit_many(self, items: Sequence[In], client: str = ANONYMOUS) -> list[Out]:
        """Queue all items or none (a request is never half admitted), then await each result."""
        if self._worker is None:
            raise QueueFull(f"{self.name} is not running")
        self.admission.check_room(self._in_flight(), self._in_flight(client), len(items))
        self.admission.check_deadline(*self.estimate_s(client, len(items)), len(items))
        loop = asyncio.get_running_loop()
        now = time.perf_counter()
        self._mean_gap_s = 0.8 * self._mean_gap_s + 0.2 * min(now - self._last_arrival, 1.0)
        self._last_arrival = now
        pending = [_Pending(item, loop.create_future(), client) for item in items]
        self._waiting.push(client, pending)
        self._arrived.set()
        self.metrics.waiting(len(self._waiting))
        try:
            results = list(await asyncio.gather(*(entry.future for entry in pending)))
            note(batch_size=max(entry.batch_size for entry in pending))
            return results
        finally:
            # If the caller went away, its items still waiting leave the queue now.
            abandoned = [entry for entry in pending if not entry.future.done()]
            for entry in abandoned:
                entry.future.cancel()
            if abandoned:
                self._waiting.remove_if(lambda entry: entry.future.cancelled())

    async def _next(self, deadline: float | None) -> _Pending[In] | None:
        """The next waiting item (round-robin by client), waiting until `deadline` for one."""
        while True:
            entry = self._waiting.pop()
            if entry is not None:
                return entry
            remaining = None if deadline is None else deadline - time.perf_counter()
            if remaining is not None and remaining <= 0:
                return None
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return None

    async def _next_batch(self) -> list[_Pending[In]]:
        first = await self._next(None)
        batch = self._gathering = [first]  # counted as in flight while the batch gathers
        waits = self._mean_gap_s < self.max_wait_s  # company is likely within max_wait_s
        deadline = first.enqueued + (self.max_wait_s if waits else 0.0)
        while len(batch) < self.max_batch_size:
            entry = await self._next(deadline)
            if entry is None:
                break
            batch.append(entry)
        return [entry for entry in batch if not entry.future.done()]

    async def _run(self) -> None:
        free: asyncio.Queue[int] = asyncio.Queue()
        for lane in range(len(self.lanes)):
            free.put_nowait(lane)
        while True:
            lane = await free.get()  # gather only for a lane that can run the batch at once
            try:
                batch = await self._next_batch()
            except asyncio.CancelledError:  # stopping: what was taken from the queue is answered
                for entry in self._gathering:
                    if not entry.future.done():
                        entry.future.set_exception(QueueFull(f"{self.name} is shutting down"))
                raise
            self._gathering = []
            self.metrics.waiting(len(self._waiting))
            if not batch:
                free.put_nowait(lane)
                continue
            self._in_lanes[lane] = batch
            task = asyncio.get_running_loop().create_task(self._run_batch(lane, batch, free))
            self._batches.add(task)
            task.add_done_callback(self._batches.discard)

    async def _run_batch(self, lane: int, batch: list[_Pending[In]], free: asyncio.Queue) -> None:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for entry in batch:
            self.metrics.waited(started - entry.enqueued)
            entry.batch_size = len(batch)
        try:
            results: Any = await loop.run_in_executor(self._executors[lane], self.lanes[lane], [e.item for e in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"{self.name}: {len(results)} results for {len(batch)} items")
        except Exception as error:  # the batch fails, the worker lives on
            self.metrics.failed()
            for entry in batch:
                if not entry.future.done():
                    entry.future.set_exception(error)
        else:
            for entry, result in zip(batch, results):
                if not entry.future.done():
                    entry.future.set_result(result)
        finally:
            del self._in_lanes[lane]
            free.put_nowait(lane)
            elapsed = time.perf_counter() - started
            self.batch_times.observe(len(batch), elapsed)
            self.metrics.run(len(batch), elapsed)
