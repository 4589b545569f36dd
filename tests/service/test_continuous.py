"""Continuous batching of generation, with the committed music model: streams advance
together, a stream that joins mid-way gets what it would get alone, and a stream whose
client leaves is dropped from the batch."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture(scope="module")
def music(client):
    return client.app.state.registry.get("music")


async def collect(chunks) -> str:
    return "".join([chunk async for chunk in chunks])


def alone(client, music, **request) -> str:
    async def run():
        return await collect(music.generate("X:1\n", **request))

    return client.portal.call(run)


def test_a_stream_joining_mid_generation_gets_the_same_output_as_alone(client, music):
    first = {"max_length": 600, "temperature": 1.0, "top_k": None, "seed": 9}
    second = {"max_length": 250, "temperature": 0.8, "top_k": 12, "seed": 5}
    expected_first, expected_second = alone(client, music, **first), alone(client, music, **second)

    def shared_runs() -> float:  # step-graph runs with more than one row so far
        sample = music.metrics.registry.get_sample_value
        labels = {"model": music.name, "version": music.manifest.version}
        return (sample("seqserve_batch_size_count", labels)
                - sample("seqserve_batch_size_bucket", labels | {"le": "1.0"}))

    async def run():
        before = shared_runs()
        stream = music.generate("X:1\n", **first)
        head = [await anext(stream), await anext(stream)]  # the first stream is well under way
        joined = asyncio.create_task(collect(music.generate("X:1\n", **second)))
        rest = await collect(stream)
        return "".join(head) + rest, await joined, shared_runs() - before

    got_first, got_second, shared_steps = client.portal.call(run)
    assert got_first == expected_first
    assert got_second == expected_second
    assert shared_steps > 0, "the two streams should have shared step-graph runs"


def test_many_concurrent_streams_each_match_their_solo_run(client, music):
    requests = [{"max_length": 120 + 37 * i, "temperature": 0.7 + 0.1 * (i % 4), "top_k": (None, 5, 20)[i % 3],
                 "seed": 100 + i} for i in range(8)]
    expected = [alone(client, music, **r) for r in requests]

    async def run():
        return await asyncio.gather(*(collect(music.generate("X:1\n", **r)) for r in requests))

    assert client.portal.call(run) == expected


def test_a_stream_whose_client_leaves_is_dropped(client, music):
    async def run():
        stream = music.generate("X:1\n", max_length=5000, temperature=1.0, top_k=None, seed=1)
        await anext(stream)
        assert music.generator.in_flight == 1
        await stream.aclose()  # what the route does when the client disconnects
        for _ in range(100):
            if music.generator.in_flight == 0:
                return True
            await asyncio.sleep(0.01)
        return False

    assert client.portal.call(run), "the abandoned stream should leave the batch"


def test_a_long_prompt_is_read_in_pieces_across_hops_with_the_same_result(client, music):
    """A 3,000-character prompt read 100 characters a hop gives what reading it at once gives,
    and a stream already writing keeps getting its characters while the prompt is read."""
    prompt = "X:1\nT:Long\nM:4/4\nL:1/8\nK:D\n" + "DEFG ABcd|dcBA GFED|" * 150
    request = {"max_length": 120, "temperature": 1.0, "top_k": None, "seed": 3}
    generator = music.generator
    saved = generator.prompt_chars_per_hop

    async def run(budget: int):
        generator.prompt_chars_per_hop = budget
        writer = music.generate("X:1\n", max_length=3000, temperature=1.0, top_k=None, seed=1)
        await anext(writer)
        long = asyncio.create_task(collect(music.generate(prompt[:3000], **request)))
        written_meanwhile = 0
        while not long.done():
            written_meanwhile += len(await anext(writer))
        await writer.aclose()
        return await long, written_meanwhile

    try:
        at_once, _ = client.portal.call(run, 10**9)
        in_pieces, written = client.portal.call(run, 100)
    finally:
        generator.prompt_chars_per_hop = saved
    assert in_pieces == at_once
    assert written >= 32 * 5, "the running stream should keep writing while the prompt is read"


def test_a_fault_outside_a_hop_fails_the_requests_in_flight_and_the_loop_goes_on(client, music, monkeypatch):
    # Before: such a fault ended the worker task silently, and every request (the start-up
    # warm-up too) waited for ever.
    generator, original, calls = music.generator, music.generator._joining, []

    def faulty():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("injected fault")
        return original()

    monkeypatch.setattr(generator, "_joining", faulty)
    request = {"max_length": 20, "temperature": 1.0, "top_k": None, "seed": 1}

    async def run():
        with pytest.raises(RuntimeError, match="injected fault"):
            await asyncio.wait_for(collect(music.generate("X:1\n", **request)), 10)
        return await asyncio.wait_for(collect(music.generate("X:1\n", **request)), 10)

    assert len(client.portal.call(run)) == 20


def test_an_idle_step_loop_gives_freed_memory_back_after_real_work(client, monkeypatch):
    """After HOPS_PER_TRIM hops the loop trims the heap once it has nothing left to do (glibc's
    malloc_trim), not during work and not after every small request."""
    import service.continuous as continuous

    trims = []
    monkeypatch.setattr(continuous, "trim_heap", lambda: trims.append(True))
    monkeypatch.setattr(continuous, "HOPS_PER_TRIM", 3)
    translator = client.app.state.registry.get("translate").translator
    translator._hops_since_trim = 0

    async def translate_and_idle():
        await translator.translate(["Hello."], 1, 2)  # one hop: below the threshold
        await asyncio.sleep(0.2)
        before = len(trims)
        await translator.translate(["I think that we should all go home now, before it starts to rain."], 4, 40)
        await asyncio.sleep(0.2)
        return before

    assert client.portal.call(translate_and_idle) == 0
    assert len(trims) == 1
