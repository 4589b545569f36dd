"""The service's music model driven in-process: what a request does past HTTP (admission, the
step loop, the tune checks in the music21 workers), with no HTTP server and no load generator
sharing the cores. Beside the served figure it separates what the step loop itself costs
from what the HTTP work and the client on the same two cores cost it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from seqserve.manifest import Manifest
from service.config import Settings
from service.metrics import Metrics
from service.registry import newest_versions
from service.tasks.music import MusicModel


async def _drive(model: MusicModel, streams: int, characters: int, duration: float) -> int:
    """`streams` users, each asking for the next `characters` characters of a new tune as soon
    as its last answer came (its tunes checked), as the route does; returns the answers."""
    stop_at, answered = time.perf_counter() + duration, 0

    async def user(first_seed: int) -> None:
        nonlocal answered
        seed = first_seed
        while time.perf_counter() < stop_at:
            composition = model.compose(None, characters, 1.0, None, seed)
            text = "".join([chunk async for chunk in composition.chunks])
            await model.check_tunes(composition.prompt + text)
            answered, seed = answered + 1, seed + streams

    await asyncio.gather(*(user(seed) for seed in range(streams)))
    return answered


def measure_music_in_process(models_dir: Path, streams: int, characters: int, duration: float,
                             device: str = "cpu") -> dict[str, float | str]:
    """Requests/s, characters/s, and the step loop's pace (its steps' rows over its steps'
    time) and mean batch, with the precision the service picks on `device`."""
    model_dir = newest_versions(models_dir)["music"]
    model = MusicModel(model_dir, Manifest.load(model_dir), Settings(models_dir=models_dir, device=device), Metrics())

    async def run() -> dict[str, float | str]:
        await model.load()  # warmed up and recording, as the service's model is once ready
        model.require_ready()
        try:
            await _drive(model, streams, characters, min(duration, 3.0))  # the batch full before timing
            before, started = model.model_metrics.totals(), time.perf_counter()
            answered = await _drive(model, streams, characters, duration)
            elapsed, after = time.perf_counter() - started, model.model_metrics.totals()
        finally:
            await model.close()
        items, runs, seconds = after.items - before.items, after.runs - before.runs, after.run_seconds - before.run_seconds
        return {"requests_per_s": answered / elapsed, "chars_per_s": answered * characters / elapsed,
                "mean_batch_size": items / max(runs, 1), "step_loop_chars_per_s": items / seconds if seconds else 0.0,
                "precision": model.precision}

    return asyncio.run(run())
