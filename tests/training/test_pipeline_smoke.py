"""Smoke run of the whole pipeline in a temporary directory: train -> export (with its parity
checks) -> evaluate -> served by the app. Each step runs as the CLI, in its own process."""

from __future__ import annotations

import json

import onnx
from fastapi.testclient import TestClient

from seqserve.manifest import Manifest
from service.app import create_app
from service.config import Settings
from tests.conftest import run_cli


def test_smoke_train_export_serve(data_cache, tmp_path):
    env = {"SEQSERVE_CACHE_DIR": str(data_cache)}
    run_dir, model_dir = tmp_path / "run", tmp_path / "models" / "sentiment" / "7"

    run_cli("training", "train", "sentiment", "--profile", "smoke", "--run-dir", str(run_dir), "--no-progress",
            "--set", "train.max_epochs=1", env=env)
    assert (run_dir / "last.pt").is_file() and (run_dir / "best.pt").is_file()
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

    with TestClient(create_app(Settings(models_dir=tmp_path / "models", device="cpu"))) as client:
        assert client.get("/readyz").status_code == 200
        body = client.post("/sentiment", json={"texts": ["great", "awful film"]}).json()
        assert body["model"] == "sentiment/7" and len(body["results"]) == 2
