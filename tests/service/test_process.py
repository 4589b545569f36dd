"""`python -m service` as users start it: a real process on loopback."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import RunningService

pytestmark = pytest.mark.slow  # starts real server processes

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_serves_on_host_and_port_then_stops_cleanly_on_sigterm():
    service = RunningService()
    process, port = service.process, service.port
    try:
        service.wait_ready()
        answer = httpx.post(f"http://127.0.0.1:{port}/sentiment", json={"text": "Loved it."}, timeout=10)
        assert answer.json()["label"] == "positive"

        # A request in flight when SIGTERM arrives is finished before the process exits.
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(httpx.post, f"http://127.0.0.1:{port}/generate-music",
                                    json={"max_length": 5000, "seed": 3}, timeout=60)
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            finished = in_flight.result()
        assert finished.status_code == 200 and len(finished.json()["abc"]) == len("X:1\n") + 5000
        assert process.wait(timeout=30) == 0
        # The log is one JSON object per line, with an access line per request.
        records = [json.loads(line) for line in process.stdout.read().decode().splitlines() if line.strip()]
        access = [r for r in records if r["logger"] == "seqserve.access"]
        assert {(r["route"], r["status"]) for r in access} >= {("/sentiment", 200), ("/generate-music", 200)}
        assert len({r["request_id"] for r in access}) == len(access), "one id per request"
        music = next(r for r in access if r["route"] == "/generate-music")
        assert music["latency_ms"] > 300, "the access line times the whole request (5,000 characters of music)"
    finally:
        service.stop()


def test_missing_models_dir_stops_startup_with_a_clear_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "service", "--models-dir", str(tmp_path / "absent")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "absent" in result.stderr


def test_streams_still_running_when_the_grace_period_ends_get_an_error_event_and_the_process_exits():
    service = RunningService({"SEQSERVE_GRACEFUL_SHUTDOWN_S": "2", "SEQSERVE_REQUEST_TIMEOUT_S": "300",
                              "SEQSERVE_EXPECTED_MODELS": "music"})
    process, url = service.process, service.url

    def stream(seed: int) -> str:
        with httpx.stream("POST", f"{url}/generate-music", json={"max_length": 5000, "seed": seed, "stream": True},
                          timeout=30) as response:
            return "".join(response.iter_text())

    try:
        service.wait_ready()
        # More work than the grace period allows: 24 streams of 5,000 characters (~5 s on 2 cores in int8).
        with ThreadPoolExecutor(24) as pool:
            streams = [pool.submit(stream, seed) for seed in range(24)]
            time.sleep(1.0)
            process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            bodies = [s.result() for s in streams]
        assert process.wait(timeout=15) == 0
        exited_after = time.monotonic() - stopped_at
        cut = [b for b in bodies if '"error": "shutting_down"' in b.strip().splitlines()[-1]]
        finished = [b for b in bodies if b.strip().splitlines()[-2] == "event: result"]
        assert cut and len(cut) + len(finished) == len(bodies), bodies[0][-300:]
        assert exited_after < 2 + 2, f"exited {exited_after:.1f} s after SIGTERM (grace 2 s)"
        records = [json.loads(line) for line in process.stdout.read().decode().splitlines() if line.strip()]
        access = [r for r in records if r["logger"] == "seqserve.access" and r["route"] == "/generate-music"]
        assert sum(r.get("stream_end") == "shutting_down" for r in access) == len(cut)
    finally:
        service.stop()


def test_the_log_is_json_only_even_when_cuda_is_tried_and_missing():
    """device=auto on a host without CUDA: ONNX Runtime's own coloured lines stay out of the log."""
    service = RunningService({"SEQSERVE_EXPECTED_MODELS": "sentiment"}, device="auto")
    process = service.process
    try:
        service.wait_ready()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
        lines = [line for line in process.stdout.read().decode().splitlines() if line.strip()]
        records = [json.loads(line) for line in lines]  # fails on any line that is not JSON
        assert all("." in r["time"] for r in records), "timestamps carry milliseconds"
    finally:
        service.stop()


def test_every_setting_is_a_flag_with_help_and_flags_win_over_the_environment(monkeypatch):
    from service.__main__ import parse_settings
    from service.config import Settings

    help_text = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=REPO_ROOT, capture_output=True,
                               text=True, timeout=60).stdout
    for name in Settings.model_fields:
        assert f"--{name.replace('_', '-')}" in help_text, name
    monkeypatch.setenv("SEQSERVE_MAX_QUEUE_SIZE", "64")
    monkeypatch.setenv("SEQSERVE_LOG_LEVEL", "WARNING")
    settings, _ = parse_settings(["--port", "9123", "--api-keys", "k1,k2"])
    assert (settings.port, settings.api_keys, settings.max_queue_size) == (9123, ["k1", "k2"], 64)
    assert settings.log_level == "warning"
    settings, _ = parse_settings(["--max-queue-size", "32"])
    assert settings.max_queue_size == 32
