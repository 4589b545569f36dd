"""music21 calls (tune checks, MIDI) in a bounded pool of worker processes.

music21 is pure Python and its cost grows faster than the tune (2,000 characters: about a
second; 20,000: minutes), so it must never run in the server's own threads: there it holds the
GIL against the event loop and the step loops, cannot be stopped, and keeps the process alive
past its shutdown. Here each call runs in a worker process (pebble's ProcessPool: the library
made for a process pool with per-call time limits and cancellation of running calls):
- a call past `timeout_s` is stopped by killing its worker (a fresh one replaces it);
- a call whose client went away is cancelled, which also kills its worker if it is running;
- stopping the pool kills the workers, so shutdown never waits for music21.
Workers start with the `spawn` method (a fork of a process running ONNX Runtime threads is not
safe) and import music21 once, when the pool starts, not on the first request.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import TypeVar

from pebble import ProcessPool

from seqserve.abc import check_tune
from service.metrics import Metrics
from service.errors import Music21Timeout, Music21Unavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
WARM_UP_TUNE = "X:1\nT:warm-up\nM:4/4\nL:1/8\nK:D\nDEFG ABcd|dcBA GFED|DEFG ABcd|d8|]"


WORKER_NICENESS = 10

# A worker is replaced after this many calls, so music21's caches cannot grow without end. A
# replacement costs 0.37 s of CPU (a fresh interpreter imports music21); at 200, 32 streams'
# tune checks (about 100 a second, 3.4 ms each then) replaced a worker every 2 s, and 32 streams
# wrote 26,100 characters/s instead of 42,500 with 2,000 (music/5, int8). Measured in one
# process: RSS stays at 74 MiB over 2,400 checks of training tunes; MIDI conversions take it
# from 74 to 96 MiB in the first 100 calls, then 96 MiB at 300.
MAX_CALLS_PER_WORKER = 2000


def _start_worker() -> None:
    # Below the service's own threads: a burst of tune checks takes the CPU the step loops and
    # the event loop leave, instead of slowing every stream (and so turning admitted work into
    # timeouts) while the checks of finished requests run.
    os.nice(WORKER_NICENESS)
    check_tune(WARM_UP_TUNE)  # imports music21 and fills its caches in the worker


class Music21Workers:
    def __init__(self, workers: int, timeout_s: float, metrics: Metrics):
        self.workers = workers
        self.timeout_s = timeout_s
        self.metrics = metrics
        self._pool: ProcessPool | None = None

    def start(self) -> None:
        self._pool = ProcessPool(max_workers=self.workers, max_tasks=MAX_CALLS_PER_WORKER, initializer=_start_worker,
                                 context=multiprocessing.get_context("spawn"))

    async def warm_up(self) -> None:
        """Wait until every worker has imported music21 (the first call is then fast)."""
        await asyncio.gather(*(self.call(check_tune, WARM_UP_TUNE, name="warm_up") for _ in range(self.workers)))

    async def call(self, function: Callable[..., T], *args, name: str | None = None) -> T:
        """Run `function(*args)` in a worker; raises Music21Timeout past the time limit. If the
        awaiting task is cancelled (client gone, request deadline), the call is cancelled too."""
        if self._pool is None or not self._pool.active:
            raise Music21Unavailable("the music21 workers are not running")
        name = name or function.__name__
        future = self._pool.schedule(function, args=args, timeout=self.timeout_s)
        try:
            result = await asyncio.wrap_future(future)
        except TimeoutError:
            self.metrics.music21_calls.labels(name, "timeout").inc()
            raise Music21Timeout(f"music21 took longer than {self.timeout_s:g} s and was stopped") from None
        except (asyncio.CancelledError, CancelledError):
            self.metrics.music21_calls.labels(name, "cancelled").inc()
            raise
        except Exception:
            self.metrics.music21_calls.labels(name, "error").inc()
            raise
        finally:
            future.cancel()  # running: its worker is killed; done: no-op
        self.metrics.music21_calls.labels(name, "ok").inc()
        return result

    def stop(self) -> None:
        """Kill the workers now: whatever they are doing is abandoned."""
        if self._pool is not None:
            self._pool.stop()
            self._pool.join(timeout=5)
            self._pool = None
