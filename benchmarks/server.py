"""A real `python -m service` process on loopback: cold start, resident memory, /metrics."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, models_dir: Path, device: str = "cpu", env: dict[str, str] | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port),
             "--models-dir", str(models_dir), "--device", device],
            cwd=REPO_ROOT, env={**os.environ, "SEQSERVE_LOG_LEVEL": "warning", **(env or {})},
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.cold_start_s = self._wait_ready(started)

    ready_timeout_s = 120.0

    def _wait_ready(self, started: float) -> float:
        while time.perf_counter() - started < self.ready_timeout_s:
            if self.process.poll() is not None:
                raise RuntimeError(f"service exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.process.kill()
        self.process.wait()  # reaped, so that log_tail reads what it wrote
        raise TimeoutError(f"service not ready in {self.ready_timeout_s:g} s: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the service's output (its stderr; read once it has exited)."""
        return self.process.stderr.read()[-chars:] if self.process.poll() is not None else ""

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def batch_stats(self, model: str) -> tuple[float, float]:
        """(sum, count) of the batch-size histogram of one model, from /metrics."""
        stats = self.run_stats(model)
        return stats["items"], stats["runs"]

    def run_stats(self, model: str) -> dict[str, float]:
        """Items, runs and seconds in runs (graph runs, or generation steps) of one model, from /metrics."""
        names = {"seqserve_batch_size_sum": "items", "seqserve_batch_size_count": "runs",
                 "seqserve_inference_seconds_sum": "seconds"}
        out = dict.fromkeys(names.values(), 0.0)
        for line in httpx.get(f"{self.url}/metrics", timeout=10).text.splitlines():
            name = line.split("{", 1)[0]
            if name in names and f'model="{model}"' in line:
                out[names[name]] = float(line.rsplit(" ", 1)[1])
        return out

    def precisions(self) -> dict[str, str]:
        """task -> the precision the service serves it in (from /v1/models)."""
        models = httpx.get(f"{self.url}/v1/models", timeout=10).json()["models"]
        return {m["task"]: m["precision"] for m in models}

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=60)
