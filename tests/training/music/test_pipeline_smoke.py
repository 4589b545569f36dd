"""Music smoke run: data -> train (with --resume, every epoch kept) -> export of the prompt and
step graphs, whose export checks include a 200-step chained run against torch; then the kept
epochs measured as candidates by `training.music.select`."""

from __future__ import annotations

import json

import pytest

from seqserve.manifest import Manifest
from tests.conftest import run_cli, smoke_cache


pytest.importorskip("torch")


@pytest.mark.slow
def test_smoke_train_export(tmp_path):
    env = {**smoke_cache(tmp_path / "cache"), "SEQSERVE_MODELS_DIR": str(tmp_path / "models")}
    run_dir, model_dir = tmp_path / "run", tmp_path / "models" / "music" / "1"
    run_cli("training", "data", "music", "--profile", "smoke", env=env)
    keep = ("--set", "train.keep_epochs=true")
    run_cli("training", "train", "music", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
            "--set", "train.max_epochs=1", *keep, env=env)
    resumed = run_cli("training", "train", "music", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
                      "--resume", "--set", "train.max_epochs=2", "--set", "train.patience=5", *keep, env=env)
    assert "resumed from" in resumed.stdout
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["epochs_run"] == 2 and summary["best_validation"]["loss_nats_per_char"] > 0

    (model_dir.parent / "experimental").mkdir(parents=True)  # not a numbered version: no effect on the next
    exported = run_cli("training", "export", "music", "--profile", "smoke", "--run-dir", str(run_dir), env=env)
    assert f"wrote music version 1 to {model_dir}" in exported.stdout
    manifest = Manifest.load(model_dir)
    assert manifest.version == "1"
    assert manifest.verify_files(model_dir) == []
    parity = manifest.metrics["parity"]
    assert parity["prompt_max_abs_diff"] <= 1e-4 and parity["chained_steps_max_abs_diff"] <= 1e-4
    prompt, step = manifest.graphs["prompt"], manifest.graphs["step"]
    assert [i.shape for i in prompt.inputs][0] == ["batch", "sequence"]
    assert prompt.outputs[0].shape[:2] == ["batch", "sequence"]
    assert [i.shape for i in step.inputs][0] == ["batch", 1]
    # the bar clock is read beside each character
    assert [(i.name, i.shape) for i in prompt.inputs][1] == ("clocks", ["batch", "sequence"])
    assert [(i.name, i.shape) for i in step.inputs][1] == ("clock", ["batch", 1])
    assert manifest.preprocessing.bar_clock.inputs == {"prompt": "clocks", "step": "clock"}

    # The kept epochs, each a run folder exported as a candidate and measured on validation.
    assert sorted(p.name for p in (run_dir / "epochs").iterdir()) == ["epoch-01.pt", "epoch-02.pt"]
    figures = tmp_path / "epochs.json"
    run_cli("training.music.select", str(run_dir), "--samples", "3", "--json", str(figures), env=env)
    rows = json.loads(figures.read_text())["epochs"]
    assert [row["epoch"] for row in rows] == [1, 2]
    history = json.loads((run_dir / "training.json").read_text())["history"]
    for row, record in zip(rows, history):
        # the ONNX graph's validation loss is the one training measured with torch
        assert row["validation_loss_nats_per_char"] == pytest.approx(record["validation"]["loss_nats_per_char"], abs=1e-3)
        assert row["samples"] == 3 and row["seeds"] == "3000-3002" and 0 <= row["share_valid"] <= 1
    epoch_two = run_dir / "epoch-02"
    assert json.loads((epoch_two / "training.json").read_text())["exported_epoch"] == 2
    candidate = Manifest.load(epoch_two / "candidate")
    assert "test_loss_nats_per_char" not in candidate.metrics and "int8" not in candidate.precisions
    assert candidate.metrics["parity"]["chained_steps_max_abs_diff"] <= 1e-4
    again = run_cli("training.music.select", str(run_dir), "--samples", "3", "--epochs", "2", env=env)
    assert "exporting" not in again.stdout.lower() and again.stdout.count("\n") == 2  # measured once, read back
