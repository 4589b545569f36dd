"""An export never destroys a model: it writes the next free version by default, refuses an
existing version unless forced, and replaces one (when forced) only once the new version is
complete. Tested on `staged` + `publish` with a fake export folder (no training), and on the
CLI's refusal, which comes before any export work."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from seqserve.manifest import DataSource, Manifest, file_entries, newest_version_dir
from tests.conftest import REPO_ROOT
from training.versions import VersionExists, next_version, publish, staged


def fake_manifest(staging: Path, version: str) -> Manifest:
    return Manifest(name="sentiment", version=version, task="sentiment", created_at="2025-01-01T00:00:00+00:00",
                    files=file_entries(staging, ["model.onnx"]), graphs={}, opset=18, torch_version="x",
                    onnx_version="x", preprocessing={"tokenizer": "tokenizer.json", "max_tokens": 8, "head_tokens": 4,
                                                     "labels": ["negative", "positive"]},
                    data=DataSource(package="p", version="1", file="f", sha256="0", license="l", splits={}),
                    hyperparameters={}, training={}, metrics={})


def fake_export(model_dir: Path, version: str, payload: bytes, force: bool = False, evaluate=None) -> Manifest:
    """What export_<task> does, with a file standing for the graphs."""
    def evaluated(staging: Path) -> dict:
        assert (staging / "manifest.json").is_file() and staging.parent == model_dir.parent and staging != model_dir
        return {"accuracy": 0.5}

    with staged(model_dir, force) as staging:
        (staging / "model.onnx").write_bytes(payload)
        return publish(fake_manifest(staging, version), staging, model_dir, evaluate or evaluated, force)


def write_version(task_dir: Path, version: str, payload: bytes) -> Path:
    fake_export(task_dir / version, version, payload)
    return task_dir / version


def leftovers(task_dir: Path) -> list[str]:
    return sorted(p.name for p in task_dir.iterdir() if p.name.startswith("."))


def test_next_version_is_one_more_than_the_highest(tmp_path):
    task_dir = tmp_path / "sentiment"
    assert next_version(task_dir) == "1"  # no folder yet
    task_dir.mkdir()
    assert next_version(task_dir) == "1"
    for version in ("1", "3"):
        write_version(task_dir, version, b"graph")
    named = write_version(task_dir, "experimental", b"graph")  # not a number: served only if no number is
    assert next_version(task_dir) == "4"
    (task_dir / "4").mkdir()  # a folder without a manifest is no version, but it is not free either
    assert next_version(task_dir) == "5"
    assert newest_version_dir(task_dir) == task_dir / "3" and named.is_dir()


def test_default_export_writes_the_next_free_version_and_keeps_the_others(tmp_path):
    task_dir = tmp_path / "sentiment"
    old = {v: write_version(task_dir, v, f"graph {v}".encode()) for v in ("1", "2")}
    version = next_version(task_dir)
    manifest = fake_export(task_dir / version, version, b"graph 3")
    assert version == "3" and manifest.version == "3" and manifest.metrics == {"accuracy": 0.5}
    assert Manifest.load(task_dir / "3").verify_files(task_dir / "3") == []
    assert newest_version_dir(task_dir) == task_dir / "3"  # what the service serves
    (tmp_path / "plain").mkdir()  # the version's mode is an ordinary folder's (the umask's), not a temp folder's
    assert (task_dir / "3").stat().st_mode == (tmp_path / "plain").stat().st_mode
    for v, model_dir in old.items():
        assert (model_dir / "model.onnx").read_bytes() == f"graph {v}".encode()
    assert leftovers(task_dir) == []


def test_an_existing_version_is_refused_without_force_and_kept(tmp_path):
    task_dir = tmp_path / "sentiment"
    model_dir = write_version(task_dir, "2", b"committed graph")
    manifest_before = (model_dir / "manifest.json").read_bytes()

    with pytest.raises(VersionExists, match="--force") as refused:  # at once, before any export work
        fake_export(model_dir, "2", b"new graph")
    assert str(model_dir) in str(refused.value)

    # A version that appears while exporting is refused at publishing too, the export discarded.
    late = task_dir / "5"
    with pytest.raises(VersionExists, match="--force"):
        with staged(late) as staging:
            (staging / "model.onnx").write_bytes(b"new graph")
            write_version(task_dir, "5", b"other export")
            publish(fake_manifest(staging, "5"), staging, late, lambda _: {})
    assert (late / "model.onnx").read_bytes() == b"other export"

    assert (model_dir / "model.onnx").read_bytes() == b"committed graph"
    assert (model_dir / "manifest.json").read_bytes() == manifest_before
    assert leftovers(task_dir) == []


def test_force_replaces_the_version_only_once_the_new_one_is_complete(tmp_path, monkeypatch):
    task_dir = tmp_path / "sentiment"
    model_dir = write_version(task_dir, "2", b"old graph")
    (model_dir / "notes.txt").write_text("only in the old version")

    # The export fails (here: its evaluation): the old version stays as it was.
    def broken(_):
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        fake_export(model_dir, "2", b"new graph", force=True, evaluate=broken)
    assert (model_dir / "model.onnx").read_bytes() == b"old graph" and leftovers(task_dir) == []

    # Renaming the new version into place fails: the old one is put back.
    rename = Path.rename

    def failing_rename(self, target):
        if self.name.endswith(".partial"):
            raise OSError("disk trouble")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_rename)
    with pytest.raises(OSError, match="disk trouble"):
        fake_export(model_dir, "2", b"new graph", force=True)
    monkeypatch.undo()
    assert (model_dir / "model.onnx").read_bytes() == b"old graph" and leftovers(task_dir) == []

    manifest = fake_export(model_dir, "2", b"new graph", force=True)
    assert (model_dir / "model.onnx").read_bytes() == b"new graph"
    assert not (model_dir / "notes.txt").exists()  # replaced, not merged
    assert Manifest.load(model_dir) == manifest and manifest.verify_files(model_dir) == []
    assert leftovers(task_dir) == []


def export_cli(*args: str, models: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training", "export", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "SEQSERVE_MODELS_DIR": str(models)})


def test_cli_refuses_an_existing_version_before_any_work_and_picks_the_next_by_default(tmp_path):
    pytest.importorskip("torch")  # the exporter is loaded before the refusal
    models = tmp_path / "models"
    model_dir = write_version(models / "sentiment", "2", b"committed graph")
    before = (model_dir / "manifest.json").read_bytes()
    no_run = str(tmp_path / "no-such-run")

    refused = export_cli("sentiment", "--version", "2", "--run-dir", no_run, models=models)
    assert refused.returncode != 0
    assert str(model_dir) in refused.stderr and "--force" in refused.stderr
    assert "next free version, 3" in refused.stderr
    assert (model_dir / "manifest.json").read_bytes() == before and (model_dir / "model.onnx").is_file()

    bad = export_cli("sentiment", "--version", "latest", models=models)
    assert bad.returncode == 2 and "not a positive integer" in bad.stderr

    # Without --version: the next free version (this run has no checkpoint, so it stops there).
    default = export_cli("sentiment", "--run-dir", no_run, models=models)
    assert f"exporting sentiment version 3 to {models / 'sentiment' / '3'}" in default.stdout
    assert default.returncode != 0 and "best.pt" in default.stderr
    assert sorted(p.name for p in (models / "sentiment").iterdir()) == ["2"]


def test_a_candidate_is_never_written_where_the_service_reads_and_is_not_evaluated(tmp_path):
    pytest.importorskip("torch")
    models = tmp_path / "models"
    no_run = str(tmp_path / "no-such-run")
    for where in ([], ["--model-dir", str(models / "translate" / "9")]):
        refused = export_cli("translate", "--candidate", "--run-dir", no_run, *where, models=models)
        assert refused.returncode != 0 and "must not be served" in refused.stderr and str(models) in refused.stderr
    other_task = export_cli("sentiment", "--candidate", "--model-dir", str(tmp_path / "c"), models=models)
    assert other_task.returncode != 0 and "translate and music only" in other_task.stderr
    assert not models.exists()

    # publish without an evaluation: no metrics, no INT8 graphs (quantizing this fake graph
    # would fail), still moved into place.
    model_dir = tmp_path / "candidate"
    with staged(model_dir, False) as staging:
        (staging / "model.onnx").write_bytes(b"graph")
        candidate = publish(fake_manifest(staging, "c"), staging, model_dir, None,
                            quality={"accuracy": ("higher", 0.1)})
    assert candidate.metrics == {} and Manifest.load(model_dir) == candidate
    assert sorted(p.name for p in model_dir.iterdir()) == ["manifest.json", "model.onnx"]
