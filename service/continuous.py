"""Continuous batching: every in-flight request advances together, one graph run per step.

`StepLoop` is the worker both generation and translation use: it owns the active set, and
per hop admits the requests that arrived, runs a few steps for everyone (in a thread, so the
event loop stays free) and hands out what is ready. A request leaves the set as soon as it
is done (or its client went away); it never waits for the others. A hop that fails fails the
requests in it, and the loop lives on. Each task's loop lives with its task:
`service/tasks/translate.py: ContinuousTranslator`, `service/tasks/music.py: ContinuousGenerator`.
"""

from __future__ import annotations

import asyncio
import logging
import math
from abc import ABC, abstractmethod
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Generic, Protocol, TypeVar

from service.batching import cancel_worker
from service.errors import QueueFull
from service.fairness import Admission, FairQueue, StepTimes, fair_share
from service.memory import trim_heap
from service.metrics import ModelMetrics

log = logging.getLogger(__name__)

# Hops between two trims of the heap, at most (see `StepLoop._turn`): a flood's end is
# trimmed, a trickle of single requests now and then, never a busy loop.
HOPS_PER_TRIM = 64


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
                 client_max_requests: int | None = None, deadline_s: float = 0.0, max_rows: int | None = None,
                 max_cells: int | None = None):
        self.name = name
        self.metrics = metrics
        self.max_active = max_active
        self.max_rows = max_rows or max_active  # rows of the step graph in the batch (beams), before fair overflow
        # Rows x the widest request's width (translation: hypotheses x the longest source, the
        # shape of the encoder memory every step reads), before fair overflow; None: no limit.
        self.max_cells = max_cells
        self.admission = Admission(name, metrics, max_requests, client_max_requests or max_requests, deadline_s)
        self.step_times = StepTimes()  # seconds per step, by rows in the batch
        self._waiting: FairQueue[Request] = FairQueue()
        self._handed: list[Request] = []  # taken from the queue for the hop that is running
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"steps-{name}")
        self._hops_since_trim = 0
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

    def _width(self, request: Request) -> int:
        """How wide the request makes every row of the batch (the batch is padded to its widest)."""
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
        clients = len(set(self._waiting.clients()) | {r.client for r in active} | {client})
        busy_rows = sum(self._rows(r) for r in active) + min(n, self.max_active) * rows_each
        # The batch holds max_rows; only with other clients waiting may it grow to twice that.
        shared_step = self.step_times.seconds(min(busy_rows, (2 if clients > 1 else 1) * self.max_rows))
        if alone_step is None or shared_step is None:
            return None, None
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
            self._check_room(client, len(requests))
            self.admission.check_deadline(*self.estimate_s(requests, steps), len(requests))
        for request in requests:
            self._waiting.push(request.client, [request])
        self.metrics.waiting(len(self._waiting))
        self._wake.set()

    def _check_room(self, client: str, items: int) -> None:
        """QueueFull / ClientBusy if `items` more from `client` would not fit in the queues."""
        self.admission.check_room(self.in_flight, self._client_in_flight(client), items)

    def _joining(self) -> list[Request]:
        """Who joins the batch at this hop: free places (`max_active` requests, `max_rows`
        rows, `max_cells` cells) go round-robin by client; a client below its fair share joins
        even a full batch (up to twice each limit, which bounds the batch's memory). A request
        that the batch's width alone keeps out (a long source beside many short ones) holds
        back those behind it until the batch has drained enough for it; without that, short
        ones joining at every hop could keep it waiting for ever."""
        active = self._active_requests()
        per_client = Counter(r.client for r in active)
        clients = len(set(per_client) | set(self._waiting.clients()))
        share = fair_share(self.max_active, clients)
        total, rows = len(active), sum(self._rows(r) for r in active)
        width = max((self._width(r) for r in active), default=0)
        rows_of: Counter[str] = Counter()
        for r in active:
            rows_of[r.client] += self._rows(r)
        joining: list[Request] = []
        held_back = False

        def may_join(client: str, request: Request) -> bool:
            nonlocal held_back
            if total == 0:
                return True  # alone, a request always fits
            if held_back:
                return False
            more_rows, more_width = rows + self._rows(request), max(width, self._width(request))
            # Past the limits only while others hold places: a client alone has the batch's
            # whole share already, and the headroom is kept for whoever comes next.
            overflow = clients > 1 and per_client[client] < share
            limit = 2 if overflow else 1
            if total >= limit * self.max_active or more_rows > limit * self.max_rows:
                return False
            if self.max_cells is None:
                return True
            cells = more_rows * more_width
            # The cells' headroom is for a client within its share of them: one with a few
            # long searches must not fill it and keep the next client out.
            within_share = (rows_of[client] + self._rows(request)) * more_width <= self.max_cells // clients
            if cells <= self.max_cells or (overflow and within_share and cells <= 2 * self.max_cells):
                return True
            # Only the cells keep it out: within its share, it waits at the head of the line.
            held_back = within_share
            return False

        while (request := self._waiting.pop(may_join)) is not None:
            joining.append(request)
            per_client[request.client] += 1
            rows_of[request.client] += self._rows(request)
            total, rows = total + 1, rows + self._rows(request)
            width = max(width, self._width(request))
        return joining

    async def _run(self) -> None:
        while True:
            try:
                await self._turn()
            except Exception as error:
                # A fault outside a hop (choosing who joins, handing out) would otherwise end
                # the worker silently and leave every request waiting for its timeout (and a
                # start-up warm-up for ever): fail what is in flight, log, and keep serving.
                log.exception("%s: the step loop failed outside a hop; failing the requests in flight", self.name)
                self.metrics.failed()
                self._handed = []
                self._fail_all(self._waiting.clear(), error)

    async def _turn(self) -> None:
        """One turn of the worker: wait for work, or run a hop and hand out what it made."""
        self._waiting.remove_if(self._gone)
        if not self.in_flight:
            self._wake.clear()
            if self._hops_since_trim >= HOPS_PER_TRIM:  # idle after real work: give back what it freed
                self._hops_since_trim = 0
                await asyncio.get_running_loop().run_in_executor(self._executor, trim_heap)
                if self.in_flight:
                    return
            await self._wake.wait()
            return
        self._hops_since_trim += 1
        joining = self._handed = self._joining()
        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, self._hop, joining)
        except Exception as error:  # a failing hop fails the requests in it; the worker lives on
            self.metrics.failed()
            self._fail_all(joining, error)
            return
        finally:
            self._handed = []
        self._hand_out(results)
        self.metrics.waiting(len(self._waiting))
