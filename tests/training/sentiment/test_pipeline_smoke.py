"""Smoke run of the whole pipeline in a temporary directory: train -> export (with its parity
checks) -> evaluate -> served by the app. Each step runs as the CLI, in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from seqserve.manifest import Manifest
from service.app import create_app
from service.config import Settings
from tests.conftest import REPO_ROOT, run_cli


@pytest.mark.slow
def test_smoke_train_export_serve(data_cache, tmp_path):
    env = {"SEQSERVE_CACHE_DIR": str(data_cache)}
    run_dir, model_dir = tmp_path / "run", tmp_path / "models" / "sentiment" / "7"

    run_cli("training", "train", "sentiment", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
            "--set", "train.max_epochs=1", env=env)
    assert (run_dir / "last.pt").is_file() and (run_dir / "best.pt").is_file()
    # The smoke profile pretrains the LSTMs as language models first (one epoch).
    pretraining = json.loads((run_dir / "training.json").read_text())["language_model_pretraining"]
    assert pretraining["epochs"] == 1 and 1 < pretraining["history"][0]["validation_perplexity"] < 2000
    # --resume picks up after the checkpointed epoch.
    resumed = run_cli("training", "train", "sentiment", "--profile", "smoke", "--run-dir", str(run_dir),
                      "--no-progress", "--resume", "--set", "train.max_epochs=2", "--set", "train.patience=5", env=env)
    assert "resumed from" in resumed.stdout
    assert json.loads((run_dir / "training.json").read_text())["epochs_run"] == 2

    run_cli("training", "export", "sentiment", "--profile", "smoke", "--run-dir", str(run_dir),
            "--model-dir", str(model_dir), "--version", "7", env=env)
    manifest = Manifest.load(model_dir)
    assert manifest.verify_files(model_dir) == []
    assert manifest.metrics["parity_max_abs_diff"] <= 1e-4
    assert manifest.metrics["test_imdb"]["examples"] > 0
    graph = onnx.load(str(model_dir / "model.onnx"))
    assert "LSTM" in {node.op_type for node in graph.graph.node}
    dims = [[d.dim_param for d in i.type.tensor_type.shape.dim] for i in graph.graph.input]
    assert dims == [["batch", "sequence"], ["batch"]]

    settings = Settings(models_dir=tmp_path / "models", device="cpu", expected_models=["sentiment"])
    with TestClient(create_app(settings)) as client:
        assert client.get("/readyz").status_code == 200
        body = client.post("/sentiment", json={"texts": ["great", "awful film"]}).json()
        assert body["model"] == "sentiment/7" and len(body["results"]) == 2


@pytest.mark.slow
def test_smoke_ensemble_export(data_cache, tmp_path):
    """Two runs on the same training rows (so the same tokenizer), one pretrained as a language
    model and one not, exported as one graph; a run with another tokenizer is refused."""
    env = {"SEQSERVE_CACHE_DIR": str(data_cache)}
    runs = {name: tmp_path / name for name in ("pretrained", "plain", "other_rows")}
    options = {"pretrained": [], "plain": ["--set", "pretrain.epochs=0"], "other_rows": ["--set", "train.seed=8"]}
    for name, run_dir in runs.items():
        run_cli("training", "train", "sentiment", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
                "--set", "train.max_epochs=1", *options[name], env=env)

    # The selection tool scores both members and their mean on the validation split, once each.
    selected = tmp_path / "selected.json"
    run_cli("training.sentiment.select", f"P={runs['pretrained']}", f"Q={runs['plain']}", "--json", str(selected), env=env)
    scored = {c["candidate"]: c for c in json.loads(selected.read_text())["candidates"]}
    assert set(scored) == {"P", "Q", "P + Q"}
    assert all(0 < c["film_right"] <= c["film_examples"] and 0 <= c["imdb"] <= 1 for c in scored.values())
    assert (runs["plain"] / "validation_probabilities.npz").is_file()

    model_dir = tmp_path / "models" / "sentiment" / "8"
    run_cli("training", "export", "sentiment", "--profile", "smoke", "--run-dir", str(runs["pretrained"]),
            "--ensemble-with", str(runs["plain"]), "--model-dir", str(model_dir), "--version", "8", env=env)
    manifest = Manifest.load(model_dir)
    assert manifest.metrics["parity_max_abs_diff"] <= 1e-4
    members = manifest.hyperparameters["members"]
    assert len(members) == 2 and "pretrain" in members[0] and "pretrain" not in members[1]
    assert len(manifest.training["members"]) == 2
    assert [i.name for i in manifest.graphs["classifier"].inputs] == ["input_ids", "lengths"]
    settings = Settings(models_dir=tmp_path / "models", device="cpu", expected_models=["sentiment"])
    with TestClient(create_app(settings)) as client:
        body = client.post("/sentiment", json={"text": "a fine film"}).json()
        assert body["model"] == "sentiment/8" and abs(sum(body["probabilities"].values()) - 1) < 1e-6

    refused = subprocess.run([sys.executable, "-m", "training", "export", "sentiment", "--profile", "smoke",
                              "--run-dir", str(runs["pretrained"]), "--ensemble-with", str(runs["other_rows"]),
                              "--model-dir", str(tmp_path / "refused")], cwd=REPO_ROOT, env={**os.environ, **env},
                             capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0 and "share one tokenizer" in refused.stderr


@pytest.mark.slow
def test_resume_continues_language_model_pretraining(data_cache, tmp_path):
    """Stopped after pretraining, before the classifier's first epoch: --resume picks the
    pretraining up where its checkpoint left it, then trains the classifier."""
    env = {"SEQSERVE_CACHE_DIR": str(data_cache)}
    run_dir = tmp_path / "run"
    run_cli("training", "train", "sentiment", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
            "--set", "train.max_epochs=0", env=env)
    assert (run_dir / "pretrain.pt").is_file() and not (run_dir / "last.pt").exists()
    resumed = run_cli("training", "train", "sentiment", "--profile", "smoke", "--run-dir", str(run_dir),
                      "--no-progress", "--resume", "--set", "pretrain.epochs=2", "--set", "train.max_epochs=1", env=env)
    assert "resumed language-model pretraining" in resumed.stdout and "after epoch 1" in resumed.stdout
    summary = json.loads((run_dir / "training.json").read_text())
    assert [h["epoch"] for h in summary["language_model_pretraining"]["history"]] == [1, 2]
    assert summary["epochs_run"] == 1 and (run_dir / "best.pt").is_file()
