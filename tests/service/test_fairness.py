"""Fair shares and admission: no client's backlog delays another's single request by more
than about one batch or hop; work that cannot meet its deadline is refused before it runs."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from service.batching import MicroBatcher
from service.continuous import StepLoop
from service.errors import ClientBusy, QueueFull, TooMuchWork
from service.fairness import Admission, FairQueue, StepTimes
from service.metrics import Metrics


def test_fair_queue_takes_clients_round_robin_and_each_client_in_order():
    queue: FairQueue[str] = FairQueue()
    queue.push("a", ["a1", "a2", "a3", "a4"])
    queue.push("b", ["b1"])
    queue.push("c", ["c1", "c2"])
    taken = [queue.pop() for _ in range(len(queue))]
    assert taken == ["a1", "b1", "c1", "a2", "c2", "a3", "a4"]
    assert queue.pop() is None and len(queue) == 0


def test_fair_queue_skips_clients_that_may_not_take_more():
    queue: FairQueue[str] = FairQueue()
    queue.push("a", ["a1", "a2"])
    queue.push("b", ["b1"])
    assert queue.pop(lambda client, item: client != "a") == "b1"
    assert queue.pop(lambda client, item: client != "a") is None
    assert queue.remove_if(lambda item: item == "a2") == ["a2"] and queue.count("a") == 1


def test_step_times_estimate_unmeasured_sizes_from_the_nearest_without_going_below_it():
    times = StepTimes()
    assert times.seconds(8) is None
    times.observe(32, 0.010)
    assert times.seconds(32) == pytest.approx(0.010)
    assert times.seconds(128) == pytest.approx(0.040)  # scaled up linearly: cautious
    assert times.seconds(1) == pytest.approx(0.010)  # never below the nearest measurement


def test_admission_refuses_by_room_client_and_deadline():
    admission = Admission("m", Metrics().model("m", "1"), max_items=10, client_max_items=4, deadline_s=5)
    admission.check_room(in_flight=6, client_in_flight=0, items=4)
    with pytest.raises(QueueFull):
        admission.check_room(in_flight=7, client_in_flight=0, items=4)
    with pytest.raises(ClientBusy):
        admission.check_room(in_flight=0, client_in_flight=3, items=2)
    admission.check_deadline(alone_s=1, shared_s=3.9, items=1)
    with pytest.raises(QueueFull) as late:  # behind other work, 20% of the deadline stays free
        admission.check_deadline(alone_s=1, shared_s=4.5, items=1)
    assert late.value.retry_after_s == pytest.approx(0.5)
    admission.check_deadline(alone_s=4.5, shared_s=4.5, items=1)  # alone, the whole deadline
    with pytest.raises(TooMuchWork):
        admission.check_deadline(alone_s=6, shared_s=6, items=1)
    admission.check_deadline(alone_s=None, shared_s=None, items=1)  # nothing measured yet: no refusal


def test_micro_batches_serve_a_single_request_before_a_hog_s_backlog():
    """Client A queues 64 items; client B's one item, sent after, runs in the next batch."""
    batches: list[list[str]] = []
    release = threading.Event()

    def process(items):
        release.wait(5)
        batches.append(list(items))
        return items

    async def scenario():
        batcher = MicroBatcher("m", process, Metrics().model("m", "1"), max_batch_size=8, max_wait_s=0.001, max_queue_size=256)
        batcher.start()
        hog = asyncio.create_task(batcher.submit_many([f"a{i}" for i in range(64)], client="a"))
        await asyncio.sleep(0.05)  # A's first batch holds the worker; 56 of A's items wait
        single = asyncio.create_task(batcher.submit_many(["b"], client="b"))
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(hog, single)
        await batcher.stop()

    asyncio.run(scenario())
    assert "b" in batches[1], f"B's item should run in the batch after the running one, ran in {batches}"


def test_micro_batcher_refuses_a_client_over_its_share_of_the_queue():
    async def scenario():
        release = threading.Event()
        batcher = MicroBatcher("m", lambda items: (release.wait(5), items)[1], Metrics().model("m", "1"), max_batch_size=4,
                               max_wait_s=0.001, max_queue_size=64, client_max_queue_size=8)
        batcher.start()
        first = asyncio.create_task(batcher.submit_many(list(range(8)), client="a"))
        await asyncio.sleep(0.05)
        with pytest.raises(ClientBusy):
            await batcher.submit_many([9], client="a")
        other = await asyncio.wait_for(asyncio.gather(batcher.submit_many([10], client="b"),
                                                      asyncio.to_thread(release.set)), 5)
        await first
        await batcher.stop()
        return other[0]

    assert asyncio.run(scenario()) == [10]


@pytest.fixture(scope="module")
def translate(client):
    return client.app.state.registry.get("translate")


LONG = ("The committee, which had been meeting every Tuesday since the beginning of the year, finally "
        "agreed that the old library should be restored rather than demolished, although several members "
        "worried about the cost. ") * 4


def test_a_single_sentence_joins_a_full_batch_of_another_client_s_long_searches(client, translate):
    """Client A fills the whole batch with long beam-8 searches; client B's sentence joins at
    the next hop (above the batch's limits: A's long sources fill its hypothesis-tokens long
    before its rows) and is answered long before A's searches end."""
    translator = translate.translator
    width = len(translator.prepare([LONG])[0].ids)
    room = min(translator.max_active, translator.max_rows // 8, translator.max_cells // (8 * width))

    async def scenario():
        hog = asyncio.create_task(translator.translate([LONG] * translator.max_active, 8, 256, client="a",
                                                       checked=False))
        while translator.active < room:  # A holds the whole batch
            await asyncio.sleep(0.01)
        started = time.perf_counter()
        answer = await translator.translate(["Where is the station?"], 1, 32, client="b")
        waited = time.perf_counter() - started
        hog_done = hog.done()
        hog.cancel()
        return answer, waited, hog_done

    answer, waited, hog_done = client.portal.call(scenario)
    assert "estación" in answer[0].translation
    assert not hog_done, "the long searches should still be running when B is answered"
    assert waited < 5, f"B waited {waited:.1f} s behind A's searches"


def test_a_client_over_its_limit_is_refused_before_its_texts_are_tokenized(client, translate, monkeypatch):
    translator, tokenized = translate.translator, []
    monkeypatch.setattr(translator.admission, "client_max_items", 2)
    monkeypatch.setattr(translator, "prepare", lambda texts: tokenized.append(texts))

    async def scenario():
        with pytest.raises(ClientBusy):
            await translator.translate(["Where is the station?"] * 3, 4, 32, client="c")

    client.portal.call(scenario)
    assert tokenized == []


def test_translation_work_that_cannot_meet_its_deadline_is_refused_up_front(models_dir):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    settings = Settings(models_dir=models_dir, device="cpu", request_timeout_s=2, expected_models=["translate"])
    with TestClient(create_app(settings)) as client:
        body = {"texts": [LONG] * 32, "beam_size": 8, "max_length": 256}
        started = time.perf_counter()
        response = client.post("/translate", json=body)
        assert response.status_code == 422 and response.json()["error"] == "too_much_work"
        assert time.perf_counter() - started < 0.5, "refused before computing"
        assert client.post("/translate", json={"text": "Hello."}).status_code == 200


class Item:
    def __init__(self, client: str):
        self.client = client


class Batch(StepLoop[Item]):
    """A StepLoop with a batch set by hand: only its admission estimates are exercised."""

    def __init__(self, active: list[Item], **kwargs):
        super().__init__("test", Metrics().model("test", "1"), **kwargs)
        self.batch = active

    def _batch_requests(self):
        return self.batch

    def _gone(self, request):
        return False

    def _hop(self, joining):
        return None

    def _hand_out(self, results):
        pass

    def _fail_all(self, joining, error):
        pass


def test_a_lone_client_s_estimate_uses_the_batch_it_can_have_not_the_fair_overflow():
    """One client with a full batch: the batch stays at max_active rows (the overflow to twice
    that is for other clients), so the next wave is estimated at the full batch's step time."""
    loop = Batch([Item("a") for _ in range(64)], max_requests=1000, max_active=64)
    loop.step_times.observe(64, 0.003)
    alone, shared = loop.estimate_s([Item("a")], steps=1000)
    assert shared == pytest.approx(2 * 1000 * 0.003), "two waves of full-batch steps"
    # With another client in the batch, this one may overflow it: 65 rows, estimated from the
    # 64-row bucket scaled to 128 (cautious), for two waves of its fair share of 32.
    loop.batch = loop.batch[:32] + [Item("b") for _ in range(32)]
    alone, shared = loop.estimate_s([Item("a")], steps=1000)
    assert shared == pytest.approx(2 * 1000 * 0.006)


class Sentence(Item):
    def __init__(self, client: str, beams: int, tokens: int):
        super().__init__(client)
        self.beams, self.tokens = beams, tokens


class Beams(Batch):
    """Rows and widths as a translation batch has them: beams x the longest source."""

    def _rows(self, request):
        return request.beams

    def _width(self, request):
        return request.tokens


def joining(active: list[Sentence], waiting: list[Sentence], **limits) -> list[Sentence]:
    loop = Beams(active, **{"max_requests": 1000, "max_active": 64, "max_rows": 128, "max_cells": 4096, **limits})
    for request in waiting:
        loop._waiting.push(request.client, [request])
    return loop._joining()


def test_a_batch_takes_sentences_up_to_its_hypothesis_tokens_and_one_alone_always():
    short = [Sentence("a", 4, 16) for _ in range(40)]
    assert len(joining([], short)) == 32  # 128 rows first: 32 x 4 beams
    assert len(joining([], [Sentence("a", 4, 64) for _ in range(40)])) == 16  # 16 x 4 x 64 = 4,096
    assert len(joining([], [Sentence("a", 8, 1024)])) == 1  # alone, past every limit, it runs
    # One long source widens every row: the short ones behind it wait for the next hops.
    assert len(joining([], [Sentence("a", 8, 128)] + short)) == 7  # 8 + 6 x 4 rows = 32 x 128 = 4,096


def test_a_client_with_few_long_searches_leaves_the_headroom_to_others():
    """A alone filled the hypothesis-tokens with four beam-8 searches of 128 subwords: with B
    waiting, A gets no more (it is past its share of the tokens, though below its share of
    places), and B's short sentence joins the full batch at once."""
    full = [Sentence("a", 8, 128) for _ in range(4)]
    joined = joining(full, [Sentence("a", 8, 128), Sentence("b", 1, 5)])
    assert [r.client for r in joined] == ["b"]


def test_a_long_sentence_is_not_overtaken_by_short_ones_for_ever():
    """B's long sentence does not fit beside A's 128 short hypotheses; it holds back the short
    ones behind it, so the batch drains until it fits, instead of refilling at every hop."""
    active = [Sentence("a", 4, 18) for _ in range(24)]  # 96 rows x 18 = 1,728
    long = Sentence("b", 4, 128)
    short = [Sentence("a", 4, 10) for _ in range(8)]
    assert joining(active, [long] + short) == []  # 100 rows x 128 = 12,800: past twice 4,096
    assert len(joining(active, [long] + short, max_cells=None)) == 9  # without the limit all join
    assert joining(active[:12], [long]) == [long]  # 52 rows x 128 = 6,656: within B's headroom
