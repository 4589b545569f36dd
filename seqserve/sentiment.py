"""Sentiment model conventions shared by evaluation and the service."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqserve.tokenization import TextEncoder, TruncationPolicy

if TYPE_CHECKING:
    from seqserve.manifest import Manifest

LABELS = ("negative", "positive")  # class index -> label; training data: 0 = negative


@dataclass(frozen=True)
class SentimentPrediction:
    label: str
    score: float
    probabilities: dict[str, float]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def decode(logits: np.ndarray) -> list[SentimentPrediction]:
    probabilities = softmax(logits.astype(np.float64))
    predictions = []
    for row in probabilities:
        best = int(row.argmax())
        predictions.append(
            SentimentPrediction(
                label=LABELS[best],
                score=float(row[best]),
                probabilities={label: float(p) for label, p in zip(LABELS, row)},
            )
        )
    return predictions


def load_encoder(model_dir: Path, manifest: "Manifest") -> TextEncoder:
    """The text encoder a sentiment model version was trained with, from its manifest."""
    pre = manifest.preprocessing
    return TextEncoder.from_file(Path(model_dir) / pre.tokenizer, TruncationPolicy(pre.max_tokens, pre.head_tokens))
