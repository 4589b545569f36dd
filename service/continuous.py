"""Continuous batching: every in-flight request advances together, one graph run per step.

`StepLoop` is the worker both generation and translation use: it owns the active set, and
per hop admits the requests that arrived, runs a few steps for everyone (in a thread, so the
event loop stays free) and hands out what is ready. A request leaves the set as soon as it
is done (or its client went away); it never waits for the others. A hop that fails fails the
requests in it, and the loop lives on.

`ContinuousGenerator` (music): each step is ONE step-graph run for all active rows, each row
sampled with its own seeded generator and settings. An LSTM's state is a fixed-size row per
stream, so joining and leaving is appending and deleting rows. Each row's arithmetic does not
depend on the other rows, so a stream's output depends on its seed and settings only, not on
who else was generating.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import numpy as np

from seqserve.bar_clock import BarClock
from seqserve.generation import GenerationState, next_clock_ids, sample_ids
from service.batching import QueueFull, cancel_worker
from service.metrics import Metrics
from service.step_state import StepState

Request = TypeVar("Request")


class StepLoop(ABC, Generic[Request]):
    """Admission, the worker task and its thread. At most `max_requests` are in flight (more
    get QueueFull at once); at most `max_active` are in the batch, the rest wait their turn in
    arrival order. Subclasses say what a hop does and how results reach their requests."""

    def __init__(self, name: str, metrics: Metrics, max_requests: int, max_active: int):
        self.name = name
        self.metrics = metrics
        self.max_requests = max_requests
        self.max_active = max_active
        self._waiting: list[Request] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"steps-{name}")
        self._worker: asyncio.Task | None = None

    @property
    @abstractmethod
    def active(self) -> int:
        """Requests in the batch now."""

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + self.active

    @abstractmethod
    def _gone(self, request: Request) -> bool:
        """Whether the request's client went away (it need not be served)."""

    @abstractmethod
    def _hop(self, joining: list[Request]) -> Any:
        """In the worker thread: add `joining` to the batch, run some steps, drop what is
        done or gone, and return what to hand out."""

    @abstractmethod
    def _hand_out(self, results: Any) -> None:
        """On the event loop: give each request what the hop produced for it."""

    @abstractmethod
    def _fail_all(self, joining: list[Request], error: Exception) -> None:
        """On the event loop: fail `joining` and every active request, and empty the batch."""

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"steps-{self.name}")

    async def stop(self) -> None:
        await cancel_worker(self._worker)
        self._worker = None
        self._executor.shutdown(wait=True)  # a hop still running in the thread ends first
        waiting, self._waiting = self._waiting, []
        self._fail_all(waiting, QueueFull(f"{self.name} is shutting down"))

    def _admit(self, requests: list[Request]) -> None:
        """Queue requests for a coming hop, all or none."""
        if self._worker is None:
            raise QueueFull(f"{self.name} is not running")
        if self.in_flight + len(requests) > self.max_requests:
            self.metrics.rejected.labels(self.name).inc(len(requests))
            raise QueueFull(f"{self.name}: {self.in_flight} requests in progress")
        self._waiting += requests
        self.metrics.queue_depth.labels(self.name).set(len(self._waiting))
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._waiting = [r for r in self._waiting if not self._gone(r)]
            if not self.in_flight:
                self._wake.clear()
                await self._wake.wait()
                continue
            room = max(self.max_active - self.active, 0)
            joining, self._waiting = self._waiting[:room], self._waiting[room:]
            started = time.perf_counter()
            try:
                results = await loop.run_in_executor(self._executor, self._hop, joining)
            except Exception as error:  # a failing hop fails the requests in it; the worker lives on
                self._fail_all(joining, error)
                continue
            finally:
                self.metrics.inference_seconds.labels(self.name).observe(time.perf_counter() - started)
            self._hand_out(results)
            self.metrics.queue_depth.labels(self.name).set(len(self._waiting))


@dataclass(eq=False)
class Stream:
    prompt: str
    remaining: int
    temperature: float
    top_k: int | None
    generator: np.random.Generator
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)  # str, then None (done) or an exception
    pending: list[int] = field(default_factory=list)
    cancelled: bool = False
    clock: BarClock | None = None  # for a model that reads the bar clock


class ContinuousGenerator(StepLoop[Stream]):
    def __init__(self, name: str, read_prompts: Callable[[str, int], GenerationState], state: StepState,
                 decode: Callable[[list[int]], str], metrics: Metrics, max_streams: int,
                 max_active: int, chunk_chars: int = 32, steps_per_hop: int = 4):
        super().__init__(name, metrics, max_streams, max_active)
        self.read_prompts = read_prompts  # (prompt, copies) -> state of `copies` rows
        self.state = state  # the active rows' state, on the step graph's device
        self.decode = decode
        self.chunk_chars = chunk_chars
        self.steps_per_hop = steps_per_hop
        self._active: list[Stream] = []

    @property
    def active(self) -> int:
        return len(self._active)

    def _gone(self, stream: Stream) -> bool:
        return stream.cancelled

    def submit(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
               seed: int) -> AsyncIterator[str]:
        """Admit a stream now (or refuse with QueueFull) and return its chunks."""
        stream = Stream(prompt, max_length, temperature, top_k, np.random.default_rng(seed))
        self._admit([stream])
        return self._chunks(stream)

    async def _chunks(self, stream: Stream) -> AsyncIterator[str]:
        try:
            while True:
                item = await stream.chunks.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stream.cancelled = True  # a client that went away leaves the batch at the next hop

    def _hand_out(self, results: list[tuple[Stream, str, bool]]) -> None:
        for stream, text, done in results:
            if text:
                stream.chunks.put_nowait(text)
            if done:
                stream.chunks.put_nowait(None)

    def _fail_all(self, joining: list[Stream], error: Exception) -> None:
        for stream in joining + self._active:
            stream.chunks.put_nowait(error)
        self._active = []
        self.state.keep(np.arange(0))

    def _hop(self, joining: list[Stream]) -> list[tuple[Stream, str, bool]]:
        """In the worker thread: admit, step, and return (stream, text, done) to hand out."""
        self._join(joining)
        self._drop([i for i, s in enumerate(self._active) if s.cancelled])
        for _ in range(self.steps_per_hop):
            if not self._active:
                break
            self._step()
            if any(s.remaining == 0 for s in self._active):
                break
        out, done_rows = [], []
        for row, stream in enumerate(self._active):
            done = stream.remaining == 0
            if done or len(stream.pending) >= self.chunk_chars:
                out.append((stream, self.decode(stream.pending), done))
                stream.pending = []
            if done:
                done_rows.append(row)
        self._drop(done_rows)
        return out

    def _join(self, streams: list[Stream]) -> None:
        by_prompt: dict[str, list[Stream]] = defaultdict(list)
        for stream in streams:
            by_prompt[stream.prompt].append(stream)
        for prompt, group in by_prompt.items():  # identical prompts (a new tune) are read once, as one batch
            state = self.read_prompts(prompt, len(group))
            for stream, clock in zip(group, state.clocks or [None] * len(group)):
                stream.clock = clock
            self.state.append(state)
            self._active += group

    def _drop(self, rows: list[int]) -> None:
        if not rows:
            return
        keep = np.setdiff1d(np.arange(len(self._active)), rows)
        self._active = [self._active[i] for i in keep]
        self.state.keep(keep)

    def _step(self) -> None:
        streams = self._active
        ids = sample_ids(self.state.logits, np.array([x.temperature for x in streams]), [x.top_k for x in streams],
                         [x.generator for x in streams])
        self.metrics.batch_size.labels(self.name).observe(len(streams))
        clock = next_clock_ids([s.clock for s in streams], self.decode(ids)) if self.state.reads_clock else None
        self.state.step(ids[:, None].astype(np.int64), clock)
        for stream, token in zip(streams, ids.tolist()):
            stream.pending.append(token)
            stream.remaining -= 1
