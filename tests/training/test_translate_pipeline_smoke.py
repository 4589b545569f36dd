"""Translation smoke run: data -> train (with --resume) -> export of the encoder and decoder-step
graphs, whose export checks include ragged-source parity, zero attention on padding and ONNX
greedy decoding matching torch."""

from __future__ import annotations

import json

from seqserve.manifest import Manifest
from tests.conftest import run_cli, smoke_cache


def test_smoke_train_export(tmp_path):
    env = smoke_cache(tmp_path / "cache")
    run_dir, model_dir = tmp_path / "run", tmp_path / "models" / "translate" / "1"
    meta = json.loads(run_cli("training", "data", "translate", "--profile", "smoke", env=env).stdout)
    assert meta["english_sentences"] == sum(meta["splits"].values()) and meta["splits"]["test"] >= 2000
    run_cli("training", "train", "translate", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
            "--set", "train.max_epochs=1", env=env)
    resumed = run_cli("training", "train", "translate", "--profile", "smoke", "--run-dir", str(run_dir),
                      "--no-progress", "--resume", "--set", "train.max_epochs=2", "--set", "train.patience=5", env=env)
    assert "resumed from" in resumed.stdout
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["epochs_run"] == 2 and summary["best_validation"]["greedy_bleu"] >= 0

    run_cli("training", "export", "translate", "--profile", "smoke", "--run-dir", str(run_dir),
            "--model-dir", str(model_dir), env=env)
    manifest = Manifest.load(model_dir)
    assert manifest.verify_files(model_dir) == []
    assert manifest.metrics["parity_max_abs_diff"] <= 1e-4
    assert manifest.metrics["greedy_decoding_matches_torch_on"] == 50
    assert {"greedy", "beam4"} <= set(manifest.metrics)
    encoder, step = manifest.graphs["encoder"], manifest.graphs["decoder_step"]
    assert encoder.inputs[0].shape == ["batch", "source"]
    assert encoder.outputs[0].shape[:2] == ["batch", "source"]
    assert step.outputs[-1].name == "attention" and step.outputs[-1].shape == ["batch", "source"]
