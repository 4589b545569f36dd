"""Sentiment evaluation: run the exported ONNX graph (not the torch checkpoint) on the test
split, per source, and on reviews from other sources."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import onnxruntime as ort

from seqserve.manifest import Manifest
from seqserve.sentiment import LABELS, decode, load_encoder
from training.sentiment import data

# Reviews written for this project in the voices of app users, bloggers and forum posts:
# text from neither training source, to check that the model holds up outside the corpus.
OTHER_SOURCES_FILE = Path(__file__).parent / "other_sources.jsonl"

# Headline metrics a quantized variant must hold (training.quantize): change allowed vs fp32.
# About 12 of IMDB's 2,490 test reviews, 8 of Rotten Tomatoes' 852 snippets.
QUALITY = {"test_imdb.accuracy": ("higher", 0.005), "test_rotten_tomatoes.accuracy": ("higher", 0.01)}


def predict_labels(session: ort.InferenceSession, encoder, texts: list[str], batch_size: int = 128) -> list[int]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    labels = [0] * len(texts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, lengths = encoder.encode([texts[i] for i in batch])
        logits = session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]
        for i, prediction in zip(batch, decode(logits)):
            labels[i] = LABELS.index(prediction.label)
    return labels


def accuracy(rows: list[dict[str, Any]], predicted: list[int]) -> dict[str, float | int]:
    hits = sum(int(p == row["label"]) for p, row in zip(predicted, rows))
    return {"accuracy": round(hits / len(rows), 4), "examples": len(rows)}


def evaluate(model_dir: Path, limit: int = 0, precision: str = "fp32") -> dict[str, Any]:
    """Accuracy per source on the test split (the first `limit` of each source if set), and on
    the out-of-corpus reviews, with the graphs of `precision`."""
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
    metrics["evaluated_with"] = f"onnxruntime {ort.__version__} ({session.get_providers()[0]}, {precision})"
    return metrics

