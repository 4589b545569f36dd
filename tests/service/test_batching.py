"""The micro-batcher's behaviour (not its speed)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from service.batching import MicroBatcher
from service.errors import QueueFull
from service.metrics import Metrics


def make(process, **overrides) -> MicroBatcher:
    options = {"max_batch_size": 8, "max_wait_s": 0.02, "max_queue_size": 64} | overrides
    return MicroBatcher("test", process, Metrics().model("test", "1"), **options)


def run(coroutine):
    return asyncio.run(coroutine)


def test_results_go_back_to_their_requests_in_order():
    batches = []

    def process(items):
        batches.append(list(items))
        return [item * 10 for item in items]

    async def scenario():
        batcher = make(process)
        batcher.start()
        answers = await asyncio.gather(*(batcher.submit_many([i, i + 100]) for i in range(20)))
        await batcher.stop()
        return answers

    answers = run(scenario())
    assert answers == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert max(len(b) for b in batches) > 1, "concurrent requests should share batches"
    assert max(len(b) for b in batches) <= 8


def test_a_failing_batch_fails_only_its_own_requests():
    def process(items):
        if "bad" in items:
            raise ValueError("boom")
        return items

    async def scenario():
        batcher = make(process, max_batch_size=1)
        batcher.start()
        results = await asyncio.gather(batcher.submit_many(["ok"]), batcher.submit_many(["bad"]),
                                       batcher.submit_many(["fine"]), return_exceptions=True)
        after = await batcher.submit_many(["still alive"])
        await batcher.stop()
        return results, after

    results, after = run(scenario())
    assert results[0] == ["ok"] and results[2] == ["fine"]
    assert isinstance(results[1], ValueError)
    assert after == ["still alive"]


def test_full_queue_refuses_at_once():
    release = threading.Event()

    def process(items):
        release.wait(5)
        return items

    async def scenario():
        batcher = make(process, max_batch_size=1, max_queue_size=5)
        batcher.start()
        first = asyncio.create_task(batcher.submit_many([0]))
        await asyncio.sleep(0.05)  # the worker holds item 0, which still counts as in progress
        queued = asyncio.create_task(batcher.submit_many([1, 2, 3, 4]))
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFull):
            await batcher.submit_many([5])
        release.set()
        results = await asyncio.gather(first, queued)
        await batcher.stop()
        return results

    assert run(scenario()) == [[0], [1, 2, 3, 4]]


def test_a_request_larger_than_the_queue_is_refused_whole():
    async def scenario():
        batcher = make(lambda items: items, max_queue_size=3)
        batcher.start()
        with pytest.raises(QueueFull):
            await batcher.submit_many([1, 2, 3, 4])
        answer = await batcher.submit_many([1, 2, 3])
        await batcher.stop()
        return answer

    assert run(scenario()) == [1, 2, 3]


def test_a_cancelled_request_leaves_the_batch():
    seen = []
    release = threading.Event()

    def process(items):
        seen.extend(items)
        release.wait(5)
        return items

    async def scenario():
        batcher = make(process, max_batch_size=1)
        batcher.start()
        blocker = asyncio.create_task(batcher.submit_many(["blocker"]))
        await asyncio.sleep(0.05)
        abandoned = asyncio.create_task(batcher.submit_many(["abandoned"]))
        await asyncio.sleep(0.01)
        abandoned.cancel()
        release.set()
        await blocker
        kept = await batcher.submit_many(["kept"])
        await batcher.stop()
        return kept

    assert run(scenario()) == ["kept"]
    assert "abandoned" not in seen


def test_sentiment_batches_are_split_into_groups_of_similar_length():
    from service.tasks.sentiment import length_groups

    lengths = [400, 3, 12, 380, 30, 20, 150, 9]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [[lengths[i] for i in g] for g in groups] == [[3, 9, 12, 20, 30], [150], [380, 400]]


def test_a_lone_request_does_not_wait_for_company_when_requests_are_sparse():
    async def scenario():
        batcher = make(lambda items: list(items), max_wait_s=0.2)
        batcher.start()
        for _ in range(3):  # sparse arrivals: the mean gap grows past max_wait_s
            await asyncio.sleep(0.25)
            await batcher.submit_many([1])
        await asyncio.sleep(0.25)
        started = asyncio.get_running_loop().time()
        await batcher.submit_many([1])
        elapsed = asyncio.get_running_loop().time() - started
        await batcher.stop()
        return elapsed

    assert run(scenario()) < 0.1


def test_lanes_run_batches_side_by_side_each_on_its_own_process():
    """Two lanes: while one runs a batch, the next batch gathers and runs in the other."""
    both_running = threading.Barrier(2, timeout=5)
    seen: dict[str, list] = {"a": [], "b": []}

    def lane(name):
        def process(items):
            both_running.wait()  # only passes when the other lane runs a batch at the same time
            seen[name].append(list(items))
            return [item + 1 for item in items]
        return process

    async def scenario():
        batcher = make([lane("a"), lane("b")], max_batch_size=4, max_wait_s=0.001)
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit_many([i]) for i in range(8)))
        finally:
            await batcher.stop()

    results = run(scenario())
    assert [r[0] for r in results] == list(range(1, 9))
    assert seen["a"] and seen["b"], "both lanes ran"
