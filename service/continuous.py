"""Continuous batching for generation: every in-flight stream advances together.

One worker owns the active set: per hop it admits the streams that arrived (their prompts
read in one prompt-graph run per distinct prompt), then runs `steps_per_hop` steps, each ONE
step-graph run for all active rows, sampling each row with its own seeded generator and
settings. A stream leaves the set as soon as it has its characters (or its client went
away); it never waits for the others. An LSTM's state is a fixed-size row per stream, so
joining and leaving is appending and deleting rows.

Each row's arithmetic does not depend on the other rows, so a stream's output depends on its
seed and settings only, not on who else was generating.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from seqserve.generation import GenerationState, sample_ids
from service.batching import QueueFull, cancel_worker
from service.metrics import Metrics
from service.step_state import StepState


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


class ContinuousGenerator:
    def __init__(self, name: str, read_prompts: Callable[[str, int], GenerationState], state: StepState,
                 decode: Callable[[list[int]], str], metrics: Metrics, max_streams: int,
                 chunk_chars: int = 32, steps_per_hop: int = 4):
        self.name = name
        self.read_prompts = read_prompts  # (prompt, copies) -> state of `copies` rows
        self.state = state  # the active rows' state, on the step graph's device
        self.decode = decode
        self.metrics = metrics
        self.max_streams = max_streams
        self.chunk_chars = chunk_chars
        self.steps_per_hop = steps_per_hop
        self._joining: list[Stream] = []
        self._active: list[Stream] = []
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"generate-{name}")
        self._worker: asyncio.Task | None = None

    @property
    def streams(self) -> int:
        return len(self._joining) + len(self._active)

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name=f"generator-{self.name}")

    async def stop(self) -> None:
        await cancel_worker(self._worker)
        self._worker = None
        for stream in self._joining + self._active:
            stream.chunks.put_nowait(QueueFull(f"{self.name} is shutting down"))
        self._joining, self._active = [], []
        self.state.keep(np.arange(0))
        self._executor.shutdown(wait=True)

    def submit(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
               seed: int) -> AsyncIterator[str]:
        """Admit a stream now (or refuse with QueueFull) and return its chunks."""
        if self._worker is None:
            raise QueueFull(f"{self.name} is not running")
        if self.streams >= self.max_streams:
            self.metrics.rejected.labels(self.name).inc()
            raise QueueFull(f"{self.name}: {self.streams} generations in progress")
        stream = Stream(prompt, max_length, temperature, top_k, np.random.default_rng(seed))
        self._joining.append(stream)
        self.metrics.queue_depth.labels(self.name).set(self.streams)
        self._wake.set()
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

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._joining and not self._active:
                self._wake.clear()
                await self._wake.wait()
            joining, self._joining = self._joining, []
            started = time.perf_counter()
            try:
                finished = await loop.run_in_executor(self._executor, self._hop, joining)
            except Exception as error:  # a failing hop fails the streams in it; the worker lives on
                for stream in joining + self._active:
                    stream.chunks.put_nowait(error)
                self._active = []
                self.state.keep(np.arange(0))
                continue
            finally:
                self.metrics.inference_seconds.labels(self.name).observe(time.perf_counter() - started)
            for stream, text, done in finished:
                if text:
                    stream.chunks.put_nowait(text)
                if done:
                    stream.chunks.put_nowait(None)
            self.metrics.queue_depth.labels(self.name).set(self.streams)

    def _hop(self, joining: list[Stream]) -> list[tuple[Stream, str, bool]]:
        """In the worker thread: admit, step, and return (stream, text, done) to hand out."""
        self._admit([s for s in joining if not s.cancelled])
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

    def _admit(self, streams: list[Stream]) -> None:
        by_prompt: dict[str, list[Stream]] = defaultdict(list)
        for stream in streams:
            by_prompt[stream.prompt].append(stream)
        for prompt, group in by_prompt.items():  # identical prompts (a new tune) are read once, as one batch
            self.state.append(self.read_prompts(prompt, len(group)))
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
        self.state.step(ids[:, None].astype(np.int64))
        for stream, token in zip(streams, ids.tolist()):
            stream.pending.append(token)
            stream.remaining -= 1
