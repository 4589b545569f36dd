"""music21 in worker processes: time limits, cancellation and shutdown kill the work; input
limits refuse what would take long before anything runs."""

from __future__ import annotations

import asyncio
import time

import pytest

from seqserve.abc import MAX_TUNE_CHARS, check_tune, to_midi
from service.metrics import Metrics
from service.errors import Music21Timeout
from service.music21_workers import Music21Workers

HEAD = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n"


def long_tune(chars: int) -> str:
    return (HEAD + "CDEF GABc|" * (chars // 10 + 1))[:chars]


def outcome(metrics: Metrics, call: str, result: str) -> float:
    return metrics.registry.get_sample_value("seqserve_music21_calls_total", {"call": call, "outcome": result}) or 0


def test_a_call_past_its_time_limit_is_stopped_and_the_pool_keeps_serving():
    async def scenario():
        metrics = Metrics()
        workers = Music21Workers(1, timeout_s=0.3, metrics=metrics)
        workers.start()
        try:
            await workers.warm_up()
            started = time.perf_counter()
            with pytest.raises(Music21Timeout):
                await workers.call(to_midi, long_tune(4000))  # about 3 s of music21
            stopped_after = time.perf_counter() - started
            check = await workers.call(check_tune, HEAD + "DEFG ABcd|dcBA GFED|DEFG ABcd|d8|]")
            return stopped_after, check, outcome(metrics, "to_midi", "timeout")
        finally:
            workers.stop()

    stopped_after, check, timeouts = asyncio.run(scenario())
    assert stopped_after < 1.5 and timeouts == 1
    assert check.valid


def test_a_cancelled_call_kills_its_worker_and_stop_returns_at_once():
    async def scenario():
        metrics = Metrics()
        workers = Music21Workers(1, timeout_s=30, metrics=metrics)
        workers.start()
        await workers.warm_up()
        call = asyncio.create_task(workers.call(to_midi, long_tune(8000)))  # ~10 s of music21
        await asyncio.sleep(0.3)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        answer = await asyncio.wait_for(workers.call(check_tune, HEAD + "DEFG ABcd|dcBA GFED|DEFG ABcd|d8|]"), 10)
        busy = asyncio.create_task(workers.call(to_midi, long_tune(8000)))
        await asyncio.sleep(0.3)
        started = time.perf_counter()
        workers.stop()
        stop_took = time.perf_counter() - started
        busy.cancel()
        return answer, stop_took, outcome(metrics, "to_midi", "cancelled")

    answer, stop_took, cancelled = asyncio.run(scenario())
    assert answer.valid and cancelled >= 1, "the next call is served by a fresh worker"
    assert stop_took < 3, f"stopping the pool took {stop_took:.1f} s with a call running"


def test_midi_over_the_tune_limit_is_refused_before_music21_runs(models_dir):
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.config import Settings

    # A generous time limit: the tune at the limit takes about a second, longer on a busy machine.
    settings = Settings(models_dir=models_dir, device="cpu", expected_models=["music"], music21_timeout_s=30)
    with TestClient(create_app(settings)) as client:
        started = time.perf_counter()
        response = client.post("/generate-music/midi", json={"abc": long_tune(19_000)})
        assert response.status_code == 422 and response.json()["fields"][0]["loc"] == ["body", "abc"]
        assert time.perf_counter() - started < 0.5
        assert client.post("/generate-music/midi", json={"abc": long_tune(MAX_TUNE_CHARS)}).status_code == 200


def test_a_generated_tune_over_the_limit_is_reported_without_being_checked(client):
    music = client.app.state.registry.get("music")
    tune = long_tune(MAX_TUNE_CHARS + 1)

    async def run():
        return await music.check_tunes(tune + "\n\n")

    [report] = client.portal.call(run)
    assert not report.valid and report.reason.startswith("length:")


def test_tune_checks_still_waiting_at_the_deadline_are_reported_unchecked_not_timed_out(client):
    """The music is answered; only the check is given up when the workers are busy too long."""
    music = client.app.state.registry.get("music")
    tune = HEAD + "DEFG ABcd|dcBA GFED|DEFG ABcd|d8|]"

    async def run():
        busy = asyncio.create_task(music.music21.call(to_midi, long_tune(4000)))  # ~3 s in the only worker
        await asyncio.sleep(0.2)
        started = time.perf_counter()
        reports = await music.check_tunes(tune + "\n\n", time_left_s=1.0)
        took = time.perf_counter() - started
        busy.cancel()
        return reports, took

    [report], took = client.portal.call(run)
    assert not report.valid and report.reason.startswith("timeout: not checked before the request deadline")
    assert took < 1.0
