"""Sentiment evaluation: run the exported ONNX graph (not the torch checkpoint) on the test
split, per source, and on reviews from other sources."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from seqserve.manifest import Manifest
from seqserve.sentiment import LABELS, SentimentPrediction, decode, load_encoder
from training.sentiment import data

# Reviews written for this project in the voices of app users, bloggers and forum posts:
# text from neither training source, to check that the model holds up outside the corpus.
OTHER_SOURCES_FILE = Path(__file__).parent / "other_sources.jsonl"

# Headline metrics a quantized variant must hold (training.quantize): change allowed vs fp32.
# About 12 of IMDB's 2,490 test reviews, 8 of Rotten Tomatoes' 852 snippets.
QUALITY = {"test_imdb.accuracy": ("higher", 0.005), "test_rotten_tomatoes.accuracy": ("higher", 0.01)}


def predict(session: ort.InferenceSession, encoder, texts: list[str], batch_size: int = 128) -> list[SentimentPrediction]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    predictions: list[SentimentPrediction | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, lengths = encoder.encode([texts[i] for i in batch])
        logits = session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]
        for i, prediction in zip(batch, decode(logits)):
            predictions[i] = prediction
    return predictions


def predict_labels(session: ort.InferenceSession, encoder, texts: list[str], batch_size: int = 128) -> list[int]:
    return [LABELS.index(p.label) for p in predict(session, encoder, texts, batch_size)]


def accuracy(rows: list[dict[str, Any]], predicted: list[int]) -> dict[str, float | int]:
    hits = sum(int(p == row["label"]) for p, row in zip(predicted, rows))
    return {"accuracy": round(hits / len(rows), 4), "examples": len(rows)}


def roc_auc(labels: list[int], scores: list[float]) -> float:
    """The chance that a random positive example scores above a random negative one (ties
    count half): the Mann-Whitney statistic, from the scores' ranks. (scikit-learn's
    roc_auc_score computes the same; it is not a dependency, and this is all of it we need.)"""
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = np.asarray(scores)[order]
    # Tied scores share the mean of their ranks.
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    for start, count in zip(first, counts):
        ranks[order[start : start + count]] = start + (count + 1) / 2
    positive = np.asarray(labels) == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def domain_metrics(session: ort.InferenceSession, encoder, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy (label by label too) and ROC AUC of P(positive) on another domain's reviews."""
    predictions = predict(session, encoder, [r["text"] for r in rows])
    predicted = [LABELS.index(p.label) for p in predictions]
    labels = [r["label"] for r in rows]
    per_label = {LABELS[label]: round(sum(p == label for p, y in zip(predicted, labels) if y == label)
                                      / max(labels.count(label), 1), 4) for label in (0, 1)}
    return accuracy(rows, predicted) | {
        "roc_auc": round(roc_auc(labels, [p.probabilities["positive"] for p in predictions]), 4),
        "accuracy_by_label": per_label}


def evaluate(model_dir: Path, limit: int = 0, precision: str = "fp32") -> dict[str, Any]:
    """Accuracy per source on the test split (the first `limit` of each source if set), on the
    out-of-corpus reviews, and on each other domain's reviews (accuracy and ROC AUC; the first
    `limit` if set), with the graphs of `precision`."""
    manifest = Manifest.load(model_dir)
    session = ort.InferenceSession(str(model_dir / manifest.graph_files(precision)["classifier"]),
                                   providers=["CPUExecutionProvider"])
    encoder = load_encoder(model_dir, manifest)

    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in data.load_splits()["test"]:
        if not limit or len(by_source[row["source"]]) < limit:
            by_source[row["source"]].append(row)
    other = [json.loads(line) for line in OTHER_SOURCES_FILE.read_text().splitlines() if line.strip()]

    metrics: dict[str, Any] = {"split": "test" + (f" (first {limit} per source)" if limit else "")}
    everything = []
    for source, rows in sorted(by_source.items()):
        predicted = predict_labels(session, encoder, [r["text"] for r in rows])
        metrics[f"test_{source}"] = accuracy(rows, predicted)
        everything += list(zip(rows, predicted))
    metrics["test_all"] = accuracy([r for r, _ in everything], [p for _, p in everything])
    metrics["other_sources"] = accuracy(other, predict_labels(session, encoder, [r["text"] for r in other]))
    for name in data.domain_names():  # training/configs/sentiment.toml [domains], never trained on
        rows = data.load_domain(name)
        metrics[f"domain_{name}"] = domain_metrics(session, encoder, rows[:limit] if limit else rows)
    metrics["evaluated_with"] = f"onnxruntime {ort.__version__} ({session.get_providers()[0]}, {precision})"
    return metrics

