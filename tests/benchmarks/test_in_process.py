"""The in-process music measurement drives the real model: requests are answered, the step
loop's steps are counted, and it runs the precision the service would pick."""

from __future__ import annotations

import pytest

from benchmarks.in_process import measure_music_in_process

pytestmark = pytest.mark.slow  # loads the music model and starts its music21 workers


def test_in_process_generation_counts_the_step_loop(models_dir):
    result = measure_music_in_process(models_dir, streams=2, characters=40, duration=1.0)
    assert result["requests_per_s"] > 0 and result["chars_per_s"] == pytest.approx(result["requests_per_s"] * 40)
    assert 1.0 <= result["mean_batch_size"] <= 2.0
    assert result["step_loop_chars_per_s"] > result["chars_per_s"]  # steps are part of each request's time
    assert result["precision"] == "int8"  # the CPU's choice for music/6 (its manifest says int8 holds)
