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
import math
import time
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from seqserve.bar_clock import BarClock
from seqserve.generation import GenerationState, next_clock_ids, sample_ids
from service.batching import ANONYMOUS, cancel_worker
from service.fairness import Admission, FairQueue, QueueFull, StepTimes, fair_share
from service.metrics import ModelMetrics
from service.step_state import StepState


class HasClient(Protocol):
    client: str


Request = TypeVar("Request", bound=HasClient)


class StepLoop(ABC, Generic[Request]):
    """Admission, the worker task and its thread. At most `max_requests` are in flight, and
    `client_max_requests` from one client (more get QueueFull / ClientBusy at once); at most
    `max_active` are in the batch, the rest wait in a fair queue (round-robin by client).

    Fair shares: while several clients have work, each is owed `max_active / clients` places
    in the batch. A client below its share joins at the next hop even when the batch is full
    (up to twice `max_active`), so a client with many long requests in the batch delays
    another client's request by one hop, not by the length of its searches.

    Subclasses say what a hop does and how results reach their requests, and time each step
    into `step_times`, which admission uses to refuse work that cannot meet its deadline."""

    def __init__(self, name: str, metrics: ModelMetrics, max_requests: int, max_active: int,
                 client_max_requests: int | None = None, deadline_s: float = 0.0, max_rows: int | None = None):
        self.name = name
        self.metrics = metrics
        self.max_active = max_active
        self.max_rows = max_rows or max_active  # rows of the step graph in the batch (beams), before fair overflow
        self.admission = Admission(name, metrics, max_requests, client_max_requests or max_requests, deadline_s)
        self.step_times = StepTimes()  # seconds per step, by rows in the batch
        self._waiting: FairQueue[Request] = FairQueue()
        self._handed: list[Request] = []  # taken from the queue for the hop that is running
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"steps-{name}")
        self._worker: asyncio.Task | None = None

    @abstractmethod
    def _batch_requests(self) -> list[Request]:
        """Requests in the batch now (as the worker thread left it)."""

    def _active_requests(self) -> list[Request]:
        """Requests in the batch, and those handed to the hop that is running to join it: they
        are in neither the queue nor the batch until the worker thread adds them."""
        if not self._handed:
            return self._batch_requests()
        return list(dict.fromkeys(self._batch_requests() + self._handed))  # once each, by identity

    def _rows(self, request: Request) -> int:
        """Rows of the step graph a request takes (beams for a beam search)."""
        return 1

    @property
    def active(self) -> int:
        return len(self._active_requests())

    @property
    def in_flight(self) -> int:
        return len(self._waiting) + self.active

    def _client_in_flight(self, client: str) -> int:
        return self._waiting.count(client) + sum(1 for r in self._active_requests() if r.client == client)

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
        self._fail_all(self._waiting.clear(), QueueFull(f"{self.name} is shutting down"))

    def estimate_s(self, requests: list[Request], steps: int) -> tuple[float | None, float | None]:
        """Seconds until `requests` (of one client, each needing about `steps` steps) would be
        done: alone on an idle model, and now (the client's fair share of the batch)."""
        if not requests:
            return 0.0, 0.0
        client, n = requests[0].client, len(requests)
        rows_each = max(self._rows(r) for r in requests)
        alone_step = self.step_times.seconds(min(n, self.max_active) * rows_each)
        active = self._active_requests()
        busy_rows = sum(self._rows(r) for r in active) + min(n, self.max_active) * rows_each
        shared_step = self.step_times.seconds(min(busy_rows, 2 * self.max_rows))
        if alone_step is None or shared_step is None:
            return None, None
        clients = len(set(self._waiting.clients()) | {r.client for r in active} | {client})
        waves = min(math.ceil((self._client_in_flight(client) + n) / fair_share(self.max_active, clients)),
                    math.ceil((self.in_flight + n) / self.max_active))
        return math.ceil(n / self.max_active) * steps * alone_step, waves * steps * shared_step

    def _admit(self, requests: list[Request], steps: int, checked: bool = True) -> None:
        """Queue requests (of one client) for a coming hop, all or none. Unchecked: warm-up,
        which must not depend on the queue settings."""
        if self._worker is None:
            raise QueueFull(f"{self.name} is not running")
        if requests and checked:
            client = requests[0].client
            self.admission.check_room(self.in_flight, self._client_in_flight(client), len(requests))
            self.admission.check_deadline(*self.estimate_s(requests, steps), len(requests))
        for request in requests:
            self._waiting.push(request.client, [request])
        self.metrics.waiting(len(self._waiting))
        self._wake.set()

    def _joining(self) -> list[Request]:
        """Who joins the batch at this hop: free places (`max_active` requests, `max_rows`
        rows) go round-robin by client; a client below its fair share joins even a full batch
        (up to twice either limit, which bounds the batch's memory)."""
        active = self._active_requests()
        per_client = Counter(r.client for r in active)
        clients = len(set(per_client) | set(self._waiting.clients()))
        share = fair_share(self.max_active, clients)
        total, rows = len(active), sum(self._rows(r) for r in active)
        joining: list[Request] = []

        def may_join(client: str, request: Request) -> bool:
            more = rows + self._rows(request)
            if total < self.max_active and more <= self.max_rows:
                return True
            # Past the limits only while others hold places: a client alone has the batch's
            # whole share already, and the headroom is kept for whoever comes next.
            return (clients > 1 and per_client[client] < share and total < 2 * self.max_active
                    and more <= 2 * self.max_rows)

        while (request := self._waiting.pop(may_join)) is not None:
            joining.append(request)
            per_client[request.client] += 1
            total, rows = total + 1, rows + self._rows(request)
        return joining

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._waiting.remove_if(self._gone)
            if not self.in_flight:
                self._wake.clear()
                await self._wake.wait()
                continue
            joining = self._handed = self._joining()
            try:
                results = await loop.run_in_executor(self._executor, self._hop, joining)
            except Exception as error:  # a failing hop fails the requests in it; the worker lives on
                self._fail_all(joining, error)
                continue
            finally:
                self._handed = []
            self._hand_out(results)
            self.metrics.waiting(len(self._waiting))


@dataclass(eq=False)
class Stream:
    client: str
    prompt: str
    remaining: int
    temperature: float
    top_k: int | None
    generator: np.random.Generator
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)  # str, then None (done) or an exception
    pending: list[int] = field(default_factory=list)
    cancelled: bool = False
    clock: BarClock | None = None  # for a model that reads the bar clock


@dataclass(eq=False)
class PromptRead:
    """Streams with the same prompt, whose prompt is being read (in pieces, across hops)."""

    prompt: str
    streams: list[Stream]
    done_chars: int = 0
    state: GenerationState | None = None


# Prompt characters read per hop, at most (about 70 ms for the 1024-unit LSTM on 2 CPU cores):
# a long prompt is read in pieces across hops, so it never stalls the streams already writing.
PROMPT_CHARS_PER_HOP = 512


class ContinuousGenerator(StepLoop[Stream]):
    def __init__(self, name: str, read_prompts: Callable[..., GenerationState], state: StepState,
                 decode: Callable[[list[int]], str], metrics: ModelMetrics, max_streams: int,
                 max_active: int, chunk_chars: int = 32, steps_per_hop: int = 4,
                 client_max_streams: int | None = None, deadline_s: float = 0.0,
                 prompt_chars_per_hop: int = PROMPT_CHARS_PER_HOP):
        super().__init__(name, metrics, max_streams, max_active, client_max_streams, deadline_s)
        self.read_prompts = read_prompts  # (prompt piece, copies, after) -> state of `copies` rows
        self.state = state  # the active rows' state, on the step graph's device
        self.decode = decode
        self.chunk_chars = chunk_chars
        self.steps_per_hop = steps_per_hop
        self.prompt_chars_per_hop = prompt_chars_per_hop
        self._active: list[Stream] = []
        self._reading: list[PromptRead] = []  # admitted, prompt not yet read: in arrival order

    def _batch_requests(self) -> list[Stream]:
        return self._active + [stream for read in self._reading for stream in read.streams]

    def _gone(self, stream: Stream) -> bool:
        return stream.cancelled

    def submit(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
               seed: int, client: str = ANONYMOUS, checked: bool = True) -> AsyncIterator[str]:
        """Admit a stream now (or refuse: see StepLoop._admit) and return its chunks."""
        stream = Stream(client, prompt, max_length, temperature, top_k, np.random.default_rng(seed))
        self._admit([stream], steps=max_length, checked=checked)
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
        for stream in joining + self._batch_requests():
            stream.chunks.put_nowait(error)
        self._active, self._reading = [], []
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
        """Queue the prompts of joining streams, then read at most `prompt_chars_per_hop`
        characters of the queued prompts, oldest first; a stream whose prompt is read joins
        the batch. Identical prompts (a new tune) joining together are read once, as one batch."""
        by_prompt: dict[str, list[Stream]] = defaultdict(list)
        for stream in streams:
            by_prompt[stream.prompt].append(stream)
        self._reading += [PromptRead(prompt, group) for prompt, group in by_prompt.items()]
        budget = self.prompt_chars_per_hop
        while self._reading and budget > 0:
            read = self._reading[0]
            if all(stream.cancelled for stream in read.streams):
                self._reading.pop(0)
                continue
            piece = read.prompt[read.done_chars:read.done_chars + budget]
            read.state = self.read_prompts(piece, len(read.streams), read.state)
            read.done_chars += len(piece)
            budget -= len(piece)
            if read.done_chars < len(read.prompt):
                break
            self._reading.pop(0)
            for stream, clock in zip(read.streams, read.state.clocks or [None] * len(read.streams)):
                stream.clock = clock
            self.state.append(read.state)
            self._active += read.streams

    def _drop(self, rows: list[int]) -> None:
        if not rows:
            return
        keep = np.setdiff1d(np.arange(len(self._active)), rows)
        self._active = [self._active[i] for i in keep]
        self.state.keep(keep)

    def _step(self) -> None:
        """Sample, read the clock and run the step graph for every active stream; the whole of
        it is timed, since admission's estimates must count what a step really costs."""
        started = time.perf_counter()
        streams = self._active
        ids = sample_ids(self.state.logits, np.array([x.temperature for x in streams]), [x.top_k for x in streams],
                         [x.generator for x in streams])
        clock = next_clock_ids([s.clock for s in streams], self.decode(ids)) if self.state.reads_clock else None
        self.state.step(ids[:, None].astype(np.int64), clock)
        for stream, token in zip(streams, ids.tolist()):
            stream.pending.append(token)
            stream.remaining -= 1
        elapsed = time.perf_counter() - started
        self.step_times.observe(len(streams), elapsed)
        self.metrics.run(len(streams), elapsed)
