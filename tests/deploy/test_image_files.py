"""The Dockerfile's stages, read statically (scripts/image_check builds and runs them, with
buildah, outside the test suite: docs/image_check.md)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import REPO_ROOT


def stages() -> dict[str, tuple[str, str]]:
    """Stage name -> (what it is FROM, its instructions joined)."""
    text = (REPO_ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    found, name = {}, None
    for line in text.splitlines():
        match = re.match(r"FROM\s+(\S+)\s+AS\s+(\S+)", line, re.IGNORECASE)
        if match:
            name = match[2]
            found[name] = (match[1], "")
        elif name and line.strip() and not line.lstrip().startswith("#"):
            found[name] = (found[name][0], found[name][1] + line + "\n")
    return found


def lineage(all_stages: dict[str, tuple[str, str]], name: str) -> str:
    """A stage's instructions with those of every stage it is built FROM or copies from."""
    base, body = all_stages[name]
    parents = [base, *re.findall(r"--from=(\S+)", body)]
    return body + "".join(lineage(all_stages, p) for p in parents if p in all_stages)


def test_targets_and_an_overridable_base():
    found = stages()
    assert {"service", "service-cpu", "train"} <= set(found)
    assert found["python-base"][0] == "${PYTHON_IMAGE}"
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.\d+-slim-bookworm$", (REPO_ROOT / "Dockerfile").read_text(), re.M)


def test_cpu_image_installs_no_cuda_extra_and_the_gpu_image_does():
    found = stages()
    cpu, gpu = lineage(found, "service-cpu"), lineage(found, "service")
    assert "pip install ." in cpu and "[cuda]" not in re.sub(r"#.*", "", cpu)
    assert "rm -f" in cpu and "libonnxruntime_providers_cuda.so" in cpu  # 285 MB never loaded on the CPU
    assert '".[cuda]"' in gpu
    for name in ("service", "service-cpu"):
        body = found[name][1] + found[found[name][0]][1]
        assert "USER 10001:10001" in body and "HEALTHCHECK" in body and "/readyz" in body


def test_venvs_are_made_with_python3():
    """Debian's own python3 (a base made by mmdebstrap) has no `python` binary until the venv exists."""
    text = (REPO_ROOT / "Dockerfile").read_text()
    assert "python -m venv" not in text and text.count("python3 -m venv /opt/venv") == 2


def test_image_check_script_is_executable_and_documented():
    script = REPO_ROOT / "scripts" / "image_check"
    assert script.is_file() and os.access(script, os.X_OK)
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "--cpu-only" in result.stdout
    assert (REPO_ROOT / "docs" / "image_check.md").is_file()
