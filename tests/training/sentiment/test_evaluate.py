"""`evaluate` runs the committed ONNX model on a fixed slice of the test split."""

from __future__ import annotations

import json

from tests.conftest import run_cli, served
from training.sentiment import data
from training.sentiment.evaluate import evaluate, roc_auc


def test_committed_model_on_a_fixed_test_slice(data_cache, models_dir):
    metrics = evaluate(served("sentiment"), limit=500)
    assert metrics["test_imdb"]["examples"] == 500
    assert metrics["test_imdb"]["accuracy"] >= 0.85
    assert metrics["test_rotten_tomatoes"]["accuracy"] >= 0.72
    assert metrics["other_sources"]["accuracy"] >= 0.85
    # Outside film: the first 500 fine-food reviews (committed model, whole set: AUC 0.78).
    fine_foods = metrics["domain_fine_foods"]
    assert fine_foods["examples"] == 500 and fine_foods["roc_auc"] >= 0.72
    assert set(fine_foods["accuracy_by_label"]) == {"negative", "positive"}
    assert metrics["evaluated_with"].startswith("onnxruntime")


def test_evaluate_cli_prints_json(data_cache):
    result = run_cli("training", "evaluate", "sentiment", "--limit", "50", "--json",
                     env={"SEQSERVE_CACHE_DIR": str(data_cache)})
    metrics = json.loads(result.stdout)
    assert metrics["test_imdb"]["examples"] == 50 and metrics["test_rotten_tomatoes"]["examples"] == 50


def test_roc_auc_is_the_share_of_pairs_ranked_right():
    # Positives 0.9, 0.4, 0.2 against negatives 0.1, 0.4, 0.3: 0.9 wins 3 pairs, 0.4 wins 2
    # and ties 1 (a half), 0.2 wins 1: 6.5 of 9.
    labels, scores = [1, 0, 1, 0, 1, 0], [0.9, 0.1, 0.4, 0.4, 0.2, 0.3]
    assert roc_auc(labels, scores) == 6.5 / 9
    assert roc_auc([1, 0], [0.8, 0.2]) == 1.0 and roc_auc([1, 0], [0.2, 0.8]) == 0.0 and roc_auc([1, 0], [0.5, 0.5]) == 0.5


def test_other_domain_is_fetched_pinned_and_labelled(data_cache):
    rows = data.load_domain("fine_foods")
    assert len(rows) == 1000 and sum(r["label"] for r in rows) == 658  # 5-star reviews
    assert not any("<br" in r["text"] for r in rows)  # cleaned as the training text is
    assert data.load_meta()["domains"]["fine_foods"]["sha256"].startswith("704dd2b1")


def test_the_other_domains_training_table_never_holds_an_evaluated_review(data_cache):
    evaluated = {r["text"] for r in data.load_domain("fine_foods")}
    table = data.load_domain_training("fine_foods")
    assert {split: len(rows) for split, rows in table.items()} == {"train": 3593, "validation": 400}
    texts = [r["text"] for rows in table.values() for r in rows]
    assert not evaluated & set(texts)  # 7 of the 4,000 had an evaluated review's text
    assert {r["source"] for rows in table.values() for r in rows} == {"fine_foods"}
    assert {r["label"] for r in table["validation"]} == {0, 1}
    described = data.load_meta()["domains"]["fine_foods"]["training_table"]
    assert described["dropped_as_evaluated"] == 7 and described["sha256"].startswith("6dec4b73")
    assert described["about_an_evaluated_group"] == 0  # no product is in both tables
