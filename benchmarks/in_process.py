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
    """`streams` users, each asking for the next tune as soon as its last was answered (its
    tunes checked), as the route does; returns the requests answered."""
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


def music_step_loop(models_dir: Path, streams: int, characters: int, duration: float,
                    device: str = "cpu") -> dict[str, float]:
    """Requests/s and the step loop's pace (its steps' rows over its steps' time) and mean
    batch, with the precision the service picks on `device`."""
    model_dir = newest_versions(models_dir)["music"]
    metrics = Metrics()
    model = MusicModel(model_dir, Manifest.load(model_dir), Settings(models_dir=models_dir, device=device), metrics)

    async def run() -> dict[str, float]:
        await model.load()
        model.require_ready()
        try:
            await _drive(model, streams, characters, min(duration, 3.0))  # warm
            labels = {"model": model.manifest.name, "version": model.manifest.version}

            def totals() -> tuple[float, float, float]:
                get = metrics.registry.get_sample_value
                return tuple(get(name, labels) or 0.0 for name in (
                    "seqserve_batch_size_sum", "seqserve_batch_size_count", "seqserve_inference_seconds_sum"))

            model.model_metrics.recording = True
            before, started = totals(), time.perf_counter()
            answered = await _drive(model, streams, characters, duration)
            elapsed, after = time.perf_counter() - started, totals()
        finally:
            await model.close()
        items, runs, seconds = (a - b for a, b in zip(after, before))
        return {"requests_per_s": answered / elapsed, "chars_per_s": answered * characters / elapsed,
                "mean_batch_size": items / max(runs, 1), "step_loop_chars_per_s": items / seconds if seconds else 0.0,
                "precision": model.precision}

    return asyncio.run(run())
