"""`python -m benchmarks --peers`: the sentiment graph behind plain FastAPI and LitServe, driven
by the same client as seqserve, in the same run, one server at a time on an idle machine.

LitServe and BentoML run in `.peers-venv/` (made on first use: a venv that sees this project's
packages through a .pth file and adds theirs, pinned), so their dependencies never reach the
service's environment. Ray Serve is not measured (its wheel alone is several hundred MB); its
figure from issue 18 is quoted in docs/benchmarks.md.
"""

from __future__ import annotations

import os
import signal
import site
import subprocess
import sys
import time
from pathlib import Path

import httpx

from benchmarks.load import run_load
from benchmarks.server import REPO_ROOT, free_port


PEERS_VENV = REPO_ROOT / ".peers-venv"
PEER_PACKAGES = ["litserve==0.2.19", "bentoml==1.4.40"]
CONCURRENCY = 64


def peers_python() -> Path:
    """The peers' interpreter, made on first use."""
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEERS_VENV)], check=True)
        peers_site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                                    check=True, capture_output=True, text=True).stdout.strip()
        Path(peers_site, "seqserve-venv.pth").write_text(f"{site.getsitepackages()[0]}\n{REPO_ROOT}\n")
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES], check=True)
    return python


def body(server: str, text: str) -> dict:
    """BentoML's batchable API takes a list per request; the others one text."""
    return {"texts": [text]} if server == "bentoml" else {"text": text}


def start(server: str, port: int, models_dir: Path, precision: str) -> subprocess.Popen:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if server == "bentoml":
        command = [str(peers_python()), "-m", "bentoml", "serve", "benchmarks.peer_bentoml:Sentiment",
                   "--host", "127.0.0.1", "--port", str(port)]
        env |= {"PEER_MODELS_DIR": str(models_dir), "PEER_PRECISION": precision, "BENTOML_DO_NOT_TRACK": "true",
                "BENTOML_CONFIG_OPTIONS": "api_server.logging.access.enabled=false"}
    else:
        python = peers_python() if server == "litserve" else Path(sys.executable)
        command = [str(python), "-m", "benchmarks.peer_servers", server, "--port", str(port),
                   "--models-dir", str(models_dir), "--precision", precision]
    process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)  # their workers are their children: stopped as a group
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited with {process.returncode}")
        try:
            if httpx.post(f"http://127.0.0.1:{port}/predict", json=body(server, "fine"), timeout=2).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    stop(process)
    raise TimeoutError(f"{server} did not answer in 120 s")


def stop(process: subprocess.Popen) -> None:
    """The server and every process it started."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    time.sleep(1)  # its workers exit too
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def compare(models_dir: Path, texts: list[str], duration: float, precision: str, served: list[dict] | None) -> dict:
    """Requests/s and latency of each peer at concurrency 64, and seqserve's ratio to each."""
    out = {}
    ours = next((row for row in served or [] if row["concurrency"] == CONCURRENCY), None)
    for server in ("fastapi", "litserve", "bentoml"):
        bodies = [body(server, t) for t in texts]
        port = free_port()
        try:
            process = start(server, port, models_dir, precision)
        except Exception as error:  # a peer that cannot start is reported, not fatal
            out[server] = {"error": f"{type(error).__name__}: {error}"}
            print(f"  peer {server}: not measured ({out[server]['error']})", flush=True)
            continue
        try:
            run_load(f"http://127.0.0.1:{port}/predict", bodies[:200], 8, 2)  # warm
            result = run_load(f"http://127.0.0.1:{port}/predict", bodies, CONCURRENCY, duration)
        finally:
            stop(process)
        if ours:
            result["seqserve_ratio"] = ours["requests_per_s"] / result["requests_per_s"]
        out[server] = result
        print(f"  peer {server:<9} c={CONCURRENCY} {result['requests_per_s']:7.1f} req/s  p50 {result['p50_ms']:6.1f}  "
              f"p99 {result['p99_ms']:6.1f} ms  errors {sum(result['errors'].values())}"
              + (f"  seqserve x{result['seqserve_ratio']:.2f}" if ours else ""), flush=True)
    return out
