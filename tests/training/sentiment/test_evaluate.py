"""`evaluate` runs the committed ONNX model on a fixed slice of the test split."""

from __future__ import annotations

import json

from tests.conftest import run_cli, served
from training.sentiment.evaluate import evaluate


def test_committed_model_on_a_fixed_test_slice(data_cache, models_dir):
    metrics = evaluate(served("sentiment"), limit=500)
    assert metrics["test_imdb"]["examples"] == 500
    assert metrics["test_imdb"]["accuracy"] >= 0.85
    assert metrics["test_rotten_tomatoes"]["accuracy"] >= 0.72
    assert metrics["other_sources"]["accuracy"] >= 0.85
    assert metrics["evaluated_with"].startswith("onnxruntime")


def test_evaluate_cli_prints_json(data_cache):
    result = run_cli("training", "evaluate", "sentiment", "--limit", "50", "--json",
                     env={"SEQSERVE_CACHE_DIR": str(data_cache)})
    metrics = json.loads(result.stdout)
    assert metrics["test_imdb"]["examples"] == 50 and metrics["test_rotten_tomatoes"]["examples"] == 50
