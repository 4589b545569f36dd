"""Translation smoke run: data -> train (with --resume) -> export of the encoder and decoder-step
graphs, whose export checks include ragged-source parity, zero attention on padding and ONNX
greedy decoding matching torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from seqserve.manifest import Manifest
from tests.conftest import REPO_ROOT, run_cli, smoke_cache


pytest.importorskip("torch")


@pytest.mark.slow
def test_smoke_train_export(tmp_path):
    env = {**smoke_cache(tmp_path / "cache"), "SEQSERVE_MODELS_DIR": str(tmp_path / "models")}
    run_dir, model_dir = tmp_path / "run", tmp_path / "models" / "translate" / "1"
    meta = json.loads(run_cli("training", "data", "translate", "--profile", "smoke", env=env).stdout)
    assert meta["english_sentences"] == sum(meta["splits"].values()) and meta["splits"]["test"] >= 2000
    run_cli("training", "train", "translate", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
            "--set", "train.max_epochs=1", env=env)
    resumed = run_cli("training", "train", "translate", "--profile", "smoke", "--run-dir", str(run_dir),
                      "--no-progress", "--resume", "--set", "train.max_epochs=2", "--set", "train.patience=5", env=env)
    assert "resumed from" in resumed.stdout
    summary = json.loads((run_dir / "training.json").read_text())
    assert summary["epochs_run"] == 2 and [entry["epoch"] for entry in summary["history"]] == [1, 2]
    best = summary["history"][summary["best_epoch"] - 1]["validation"]
    assert summary["best_validation"] == best, "the best epoch is the one the summary reports"
    assert best["greedy_bleu"] == max(entry["validation"]["greedy_bleu"] for entry in summary["history"])

    # train.init_from: a run that starts from this one's best weights and tokenizer (as from a
    # folder `recover` wrote). At a learning rate of ~0 its first validation is the start's.
    tuned = tmp_path / "tuned"
    run_cli("training", "train", "translate", "--profile", "smoke", "--run-dir", str(tuned), "--no-progress",
            "--set", "train.max_epochs=1", "--set", f"train.init_from={run_dir}", "--set", "train.learning_rate=1e-12",
            env=env)
    assert (tuned / "tokenizer.json").read_bytes() == (run_dir / "tokenizer.json").read_bytes()
    started = json.loads((tuned / "training.json").read_text())
    assert started["initialised_from"] == str(run_dir)
    assert started["history"][0]["validation"]["greedy_bleu"] == best["greedy_bleu"]
    refused = subprocess.run([sys.executable, "-m", "training", "train", "translate", "--profile", "smoke",
                              "--run-dir", str(tmp_path / "other"), "--no-progress", "--set", f"train.init_from={run_dir}",
                              "--set", "model.decoder_hidden=24"], cwd=REPO_ROOT, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "do not fit this run's network" in refused.stderr

    # No --version: the next free version under SEQSERVE_MODELS_DIR, here the first.
    exported = run_cli("training", "export", "translate", "--profile", "smoke", "--run-dir", str(run_dir), env=env)
    assert f"wrote translate version 1 to {model_dir}" in exported.stdout
    assert "the service serves the highest version of each task" in exported.stdout
    manifest = Manifest.load(model_dir)
    assert manifest.version == "1"
    assert manifest.verify_files(model_dir) == []
    assert manifest.metrics["parity_max_abs_diff"] <= 1e-4
    assert manifest.metrics["greedy_decoding_matches_torch_on"] == 50
    assert {"greedy", "beam4"} <= set(manifest.metrics)
    encoder, step = manifest.graphs["encoder"], manifest.graphs["decoder_step"]
    assert encoder.inputs[0].shape == ["batch", "source"]
    assert encoder.outputs[0].shape[:2] == ["batch", "source"]
    assert step.outputs[-1].name == "attention" and step.outputs[-1].shape == ["batch", "source"]

    # Exporting over it is refused (before any export work) without --force; it stays as it was.
    refused = subprocess.run([sys.executable, "-m", "training", "export", "translate", "--profile", "smoke",
                              "--run-dir", str(run_dir), "--version", "1"], cwd=REPO_ROOT,
                             env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and str(model_dir) in refused.stderr and "--force" in refused.stderr
    assert Manifest.load(model_dir) == manifest and manifest.verify_files(model_dir) == []

    # The run decoding together with itself (an ensemble of one translator twice): graphs as
    # wide as two, the same translations, so the same test scores.
    run_cli("training", "export", "translate", "--profile", "smoke", "--run-dir", str(run_dir),
            "--ensemble-with", str(run_dir), "--version", "2", env=env)
    doubled = Manifest.load(tmp_path / "models" / "translate" / "2")
    assert doubled.metrics["parity_max_abs_diff"] <= 1e-4 and doubled.metrics["greedy_decoding_matches_torch_on"] == 50
    assert len(doubled.hyperparameters["members"]) == 2 and len(doubled.training["members"]) == 2
    assert doubled.preprocessing.state.decoder_hidden == 2 * manifest.preprocessing.state.decoder_hidden
    assert doubled.metrics["greedy"] == manifest.metrics["greedy"]

    # A candidate: the same checks, no test metrics, no INT8 graphs; scored on validation.
    candidate_dir = tmp_path / "candidate"
    run_cli("training", "export", "translate", "--profile", "smoke", "--run-dir", str(run_dir), "--candidate",
            "--model-dir", str(candidate_dir), env=env)
    candidate = Manifest.load(candidate_dir)
    assert set(candidate.metrics) == {"parity_max_abs_diff", "greedy_decoding_matches_torch_on"}
    assert not any(path.name.endswith("int8.onnx") for path in candidate_dir.iterdir())
    scored = json.loads(run_cli("training", "evaluate", "translate", "--profile", "smoke", "--model-dir",
                                str(candidate_dir), "--split", "validation", "--limit", "20", "--json", env=env).stdout)
    assert scored["validation_sentences"] == 20 and "test_sentences" not in scored
    assert {"greedy", "beam4"} <= set(scored)
