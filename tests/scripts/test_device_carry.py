"""scripts/device_carry.py: the models and a wheel split into calls under the budget, received
call by call into a stash that persists, joined and checked, on a pretend device folder."""

from __future__ import annotations

import filecmp
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

spec = importlib.util.spec_from_file_location("device_carry", REPO_ROOT / "scripts" / "device_carry.py")
device_carry = importlib.util.module_from_spec(spec)
spec.loader.exec_module(device_carry)

KIB = 1024
GIT = shutil.which("git") is not None


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    version = root / "models" / "sentiment" / "5"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text('{"graphs": {}}')
    (version / "model.onnx").write_bytes(os.urandom(300 * KIB))
    (version / "model.int8.onnx").write_bytes(os.urandom(80 * KIB))
    (root / "models" / "music" / "5").mkdir(parents=True)
    (root / "models" / "music" / "5" / "step.onnx").write_bytes(os.urandom(150 * KIB))
    (root / ".gitignore").write_text("/.carry/\n/.stash/\n/.whl/\n")
    (root / "README.md").write_text("a small tracked file\n")
    if GIT:  # what travels is what git lists; the tests that do not measure it need no git
        subprocess.run(["git", "init", "-q"], cwd=root, check=True)
        subprocess.run(["git", "add", "."], cwd=root, check=True)
    (root / ".whl").mkdir()
    (root / ".whl" / "onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl").write_bytes(os.urandom(700 * KIB))
    return root


def test_parts_travel_call_by_call_and_join_to_the_same_files(repo: Path, tmp_path: Path):
    wheel = next((repo / ".whl").iterdir())
    calls = device_carry.pack(repo, [wheel], with_int8=False, part_bytes=256 * KIB)
    carried = [sum(p.stat().st_size for p in c.iterdir() if p.name != "plan.json") for c in calls]
    assert len(calls) == 5 and carried[:-1] == [256 * KIB] * 4  # full calls: one may end a file and begin the next
    assert 0 < carried[-1] <= 256 * KIB

    device = tmp_path / "device"
    device.mkdir()
    for number, call in enumerate(calls, start=1):
        shutil.copytree(call, device / ".carry" / call.name)  # what `run` with carry=[that folder] sends
        device_carry.receive(device)
        if number < len(calls):
            assert device_carry.missing(device)
            with pytest.raises(SystemExit, match="not received yet"):
                device_carry.join(device)
    assert device_carry.join(device) == ["models.tar", wheel.name]

    assert filecmp.cmp(device / ".whl" / wheel.name, wheel, shallow=False)
    carried = sorted(p.relative_to(device) for p in (device / "models").rglob("*") if p.is_file())
    assert [str(p) for p in carried] == ["models/music/5/step.onnx", "models/sentiment/5/manifest.json",
                                         "models/sentiment/5/model.onnx"]  # no int8 graph unless asked
    assert all(filecmp.cmp(device / p, repo / p, shallow=False) for p in carried)


def test_a_corrupted_part_is_refused(repo: Path, tmp_path: Path):
    calls = device_carry.pack(repo, [], with_int8=True, part_bytes=256 * KIB)
    device = tmp_path / "device"
    for call in calls:
        shutil.copytree(call, device / ".carry" / call.name)
    device_carry.receive(device)
    part = device / ".stash" / "models.tar.part-000"
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(SystemExit, match="sha256"):
        device_carry.join(device)


@pytest.mark.skipif(not GIT, reason="measuring the tree that travels lists it with git, which is not installed here")
def test_models_set_aside_leave_the_tree_small_and_come_back(repo: Path):
    with_models = device_carry.tree_bytes(repo)
    device_carry.aside(repo)
    assert not (repo / "models").exists()
    assert device_carry.tree_bytes(repo) < with_models - 500 * KIB
    calls = device_carry.pack(repo, [], with_int8=False, part_bytes=None)  # packs from the aside copy
    assert len(calls) == 1
    device_carry.restore(repo)
    assert (repo / "models" / "sentiment" / "5" / "model.onnx").is_file() and not (repo / ".carry" / "aside").exists()


def test_a_task_cache_travels_for_training_without_the_models(repo: Path, tmp_path: Path):
    cache = tmp_path / "cache" / "translate"
    cache.mkdir(parents=True)
    (cache / "meta.json").write_text("{}")
    (cache / "train.jsonl.gz").write_bytes(os.urandom(90 * KIB))
    wheel = tmp_path / "pydantic-2.14.4-py3-none-any.whl"
    wheel.write_bytes(os.urandom(40 * KIB))
    calls = device_carry.pack(repo, [wheel], with_int8=False, part_bytes=56 * 1024 * KIB, models=False,
                              caches={"translate": cache})
    assert len(calls) == 1  # the data and the wheels of a training call fit one call
    device = tmp_path / "device"
    shutil.copytree(calls[0], device / ".carry" / calls[0].name)
    device_carry.receive(device)
    assert device_carry.join(device) == ["cache-translate.tar", wheel.name]
    assert not (device / "models").exists()
    assert filecmp.cmp(device / ".stash" / "cache" / "translate" / "train.jsonl.gz", cache / "train.jsonl.gz",
                       shallow=False)
    assert (device / ".whl" / wheel.name).is_file()


def test_a_checkpoint_comes_back_in_parts_of_16_mib_without_its_optimizer_state(tmp_path: Path):
    torch = pytest.importorskip("torch")
    run = tmp_path / "run"
    run.mkdir()
    weights = {"w": torch.randn(9 * 1024 * 1024)}  # 36 MiB of weights: three parts
    torch.save({"epoch": 3, "model": weights, "model_args": {"n": 1}, "config": {"train": {}},
                "optimizer": {"state": {"exp_avg": torch.randn(9 * 1024 * 1024)}}, "rng": {}}, run / "best.pt")
    (run / "training.json").write_text('{"epochs_run": 3}')
    (run / "last.pt").write_bytes(os.urandom(KIB))  # stays on the device
    out = tmp_path / "OUT"
    written = device_carry.send_back([run], out)  # the run folder: all but last.pt
    assert len(written) == 5 and all(p.stat().st_size <= 16 * 1024 * KIB for p in written)  # 3 + 1 parts, back.json
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in written)  # nothing else in $OUT
    assert device_carry.take_back(out, tmp_path / "runs" / "gpu") == ["best.pt", "training.json"]
    back = torch.load(tmp_path / "runs" / "gpu" / "best.pt", weights_only=False)
    assert set(back) == {"epoch", "model", "model_args", "config"} and torch.equal(back["model"]["w"], weights["w"])
    assert (run / "best.pt").stat().st_size > 70 * 1024 * KIB  # the run's own file is left as it was

    (run / "big.pt").write_bytes(os.urandom(70 * 1024 * KIB))  # too much for one call
    with pytest.raises(SystemExit, match="more than one call brings back"):
        device_carry.send_back([run / "big.pt"], tmp_path / "OUT2")
    (out / "best.pt.part-001").write_bytes(b"broken")
    with pytest.raises(SystemExit, match="sha256"):
        device_carry.take_back(out, tmp_path / "runs" / "gpu2")


def test_the_service_carry_and_the_device_cover_the_service_requirements():
    """What `pack --with-service` carries, with what the lent machine has, is all that the
    service's dependencies require (as installed here, without extras): a dependency added to
    pyproject.toml and missing from the carry fails here rather than on a GPU machine."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    carried = {canonicalize_name(n) for n in device_carry.SERVICE_PACKAGES + device_carry.TRAINING_PACKAGES}
    present = {canonicalize_name(n) for n in device_carry.DEVICE_HAS} | {"onnxruntime-gpu"}  # its own carry

    def needs(name: str) -> list[str]:
        requirements = [Requirement(r) for r in distribution(name).requires or []]
        return [canonicalize_name(r.name) for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]

    missing, seen, todo = set(), set(), needs("seqserve")
    while todo:
        name = todo.pop()
        if name in seen or name in present:
            continue
        seen.add(name)
        if name not in carried:
            missing.add(name)
            continue
        todo += needs(name)
    assert not missing, f"neither carried by --with-service nor on the lent machine: {sorted(missing)}"
    assert not carried - seen - {"httptools"}, "carried but needed by nothing (httptools: uvicorn's [standard] extra)"
