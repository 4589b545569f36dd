"""`python -m service` as users start it: a real process on loopback."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serves_on_host_and_port_then_stops_cleanly_on_sigterm():
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port),
                                "--device", "cpu"], cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        ready = None
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        assert ready is not None and ready.status_code == 200
        answer = httpx.post(f"http://127.0.0.1:{port}/sentiment", json={"text": "Loved it."}, timeout=10)
        assert answer.json()["label"] == "positive"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_missing_models_dir_stops_startup_with_a_clear_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "service", "--models-dir", str(tmp_path / "absent")],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "absent" in result.stderr
