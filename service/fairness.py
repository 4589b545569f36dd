"""Fair shares of a model between clients, and admission that knows what work costs.

A client is its API key (a hash of it), or its address where there are no keys. Every
batcher keeps the items that wait in a `FairQueue`: one queue per client, served round-robin,
so a client with hundreds of items waiting delays another client's single item by at most
one batch (micro-batching) or one hop (continuous batching).

`Admission` refuses up front what cannot be served well, before any of it is computed:
- more items in flight than the model takes (`max_queue_size`): 503 + Retry-After;
- more items in flight from one client than `client_max_queue_size`: 429 + Retry-After;
- work whose estimated finish lies past the request deadline (behind other work: past 80% of
  it): 503 + Retry-After when it is the work ahead that makes it late, 422 when the request
  alone could never finish in time.
The estimate is the client's fair share of the measured speed of the batch (see `StepTimes`).
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from service.metrics import ModelMetrics
from service.errors import ClientBusy, QueueFull, TooMuchWork

T = TypeVar("T")


# Work is admitted behind other work only while its estimate leaves this share of the deadline
# free: what the estimate cannot see (tune checks and prompt reads taking CPU from the steps,
# a busier moment) must not turn admitted work into timeouts. Alone on an idle model, work is
# admitted while its estimate fits the whole deadline.
HEADROOM = 0.8


class FairQueue(Generic[T]):
    """Waiting items, one FIFO per client, taken round-robin across clients."""

    def __init__(self) -> None:
        self._by_client: OrderedDict[str, deque[T]] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[T]:
        for items in self._by_client.values():
            yield from items

    def clients(self) -> list[str]:
        return list(self._by_client)

    def count(self, client: str) -> int:
        items = self._by_client.get(client)
        return len(items) if items else 0

    def push(self, client: str, items: list[T]) -> None:
        self._by_client.setdefault(client, deque()).extend(items)
        self._size += len(items)

    def pop(self, eligible: Callable[[str, T], bool] = lambda client, item: True) -> T | None:
        """The oldest item of the next client in the rotation whose oldest item is eligible
        (that client then goes to the back of the rotation), or None."""
        for client in list(self._by_client):
            if not eligible(client, self._by_client[client][0]):
                continue
            items = self._by_client.pop(client)
            item = items.popleft()
            if items:
                self._by_client[client] = items  # to the back of the rotation
            self._size -= 1
            return item
        return None

    def remove_if(self, gone: Callable[[T], bool]) -> list[T]:
        removed = []
        for client, items in list(self._by_client.items()):
            if not any(gone(item) for item in items):
                continue
            kept = deque(item for item in items if not gone(item))
            removed += [item for item in items if gone(item)]
            if kept:
                self._by_client[client] = kept
            else:
                del self._by_client[client]
        self._size -= len(removed)
        return removed

    def clear(self) -> list[T]:
        items = list(self)
        self._by_client.clear()
        self._size = 0
        return items


class StepTimes:
    """Measured seconds per batch run (or per step) by batch size, in buckets of powers of two,
    each an exponentially weighted mean. An estimate for a batch size with no measurement
    scales the nearest measured one linearly in size (never below it): cautious, not blind."""

    def __init__(self, smoothing: float = 0.2):
        self.smoothing = smoothing
        self._seconds: dict[int, float] = {}

    @staticmethod
    def _bucket(rows: int) -> int:
        return 1 << max(0, math.ceil(math.log2(max(rows, 1))))

    def observe(self, rows: int, seconds: float) -> None:
        bucket = self._bucket(rows)
        old = self._seconds.get(bucket)
        self._seconds[bucket] = seconds if old is None else (1 - self.smoothing) * old + self.smoothing * seconds

    def seconds(self, rows: int) -> float | None:
        if not self._seconds:
            return None
        bucket = self._bucket(rows)
        if bucket in self._seconds:
            return self._seconds[bucket]
        nearest = min(self._seconds, key=lambda b: abs(math.log2(b) - math.log2(bucket)))
        return self._seconds[nearest] * max(1.0, bucket / nearest)


class Admission:
    """The admission rules one model's batcher applies, and their metrics."""

    def __init__(self, name: str, metrics: ModelMetrics, max_items: int, client_max_items: int, deadline_s: float):
        self.name = name
        self.metrics = metrics
        self.max_items = max_items
        self.client_max_items = client_max_items
        self.deadline_s = deadline_s  # 0: no deadline

    def check_room(self, in_flight: int, client_in_flight: int, items: int) -> None:
        if in_flight + items > self.max_items:
            self._refuse("queue_full", items)
            raise QueueFull(f"{self.name}: {in_flight} items in progress or waiting (max_queue_size {self.max_items})")
        if client_in_flight + items > self.client_max_items:
            self._refuse("client_limit", items)
            raise ClientBusy(f"{self.name}: this client has {client_in_flight} items in progress or waiting "
                             f"(client_max_queue_size {self.client_max_items})")

    def check_deadline(self, alone_s: float | None, shared_s: float | None, items: int) -> None:
        """`alone_s`: the estimate on an idle model; `shared_s`: with the work in flight now."""
        if not self.deadline_s or alone_s is None or shared_s is None:
            return
        if alone_s > self.deadline_s:
            self._refuse("too_much_work", items)
            raise TooMuchWork(f"{self.name}: this request alone needs about {alone_s:.0f} s, over the "
                              f"{self.deadline_s:g} s request timeout; send fewer texts or a smaller "
                              "beam_size / max_length")
        if shared_s > max(HEADROOM * self.deadline_s, alone_s):
            self._refuse("would_time_out", items)
            raise QueueFull(f"{self.name}: with the work ahead this request would take about {shared_s:.0f} s, "
                            f"more than the {self.deadline_s:g} s request timeout allows",
                            retry_after_s=shared_s - HEADROOM * self.deadline_s)

    def _refuse(self, reason: str, items: int) -> None:
        self.metrics.refused(reason, items)


def fair_share(capacity: int, clients: int) -> int:
    """Slots of a batch one client gets while `clients` have work."""
    return max(1, capacity // max(clients, 1))
