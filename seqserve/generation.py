"""Sampling characters from the music model's ONNX graphs (numpy only).

Each sequence has its own random generator, seeded per request, so a sequence's output
depends on its seed and settings alone, never on what else runs in the same batch.
"""

from __future__ import annotations

import numpy as np

from seqserve.abc import TUNE_SEPARATOR
from seqserve.characters import CharVocabulary


def sample_ids(logits: np.ndarray, temperature: float, top_k: int | None,
               generators: list[np.random.Generator]) -> np.ndarray:
    """logits [B, V] -> one id per row, from softmax(logits / temperature) over the top_k."""
    scaled = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -top_k, axis=-1)[:, -top_k, None]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    scaled -= scaled.max(axis=-1, keepdims=True)
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    draws = np.array([g.random() for g in generators])[:, None]
    ids = (probabilities.cumsum(axis=-1) < draws).sum(axis=-1)
    return np.minimum(ids, scaled.shape[-1] - 1)


def generate(prompt_session, step_session, vocabulary: CharVocabulary, prompt: str, seeds: list[int],
             max_length: int, temperature: float = 1.0, top_k: int | None = None,
             stop_at_tune_end: bool = True) -> list[str]:
    """Continue one cleaned prompt once per seed, in one batch: the prompt graph reads the prompt,
    then the step graph writes one character per run. Returns the generated text per seed
    (without the prompt), stopped at the end of the first tune if asked."""
    layers, hidden = _state_shape(prompt_session)
    batch = len(seeds)
    tokens = np.repeat(vocabulary.encode(prompt)[None, :], batch, axis=0)
    zeros = np.zeros((layers, batch, hidden), dtype=np.float32)
    logits, h, c = prompt_session.run(None, {"tokens": tokens, "h0": zeros, "c0": zeros})
    logits = logits[:, -1, :]
    generators = [np.random.default_rng(seed) for seed in seeds]
    outputs = [[] for _ in seeds]
    active = np.ones(batch, dtype=bool)
    separator = TUNE_SEPARATOR
    for _ in range(max_length):
        ids = sample_ids(logits, temperature, top_k, generators)
        for row in np.flatnonzero(active):
            outputs[row].append(vocabulary.characters[ids[row]])
            if stop_at_tune_end and "".join(outputs[row][-len(separator):]) == separator:
                active[row] = False
        if not active.any():
            break
        logits, h, c = step_session.run(None, {"token": ids[:, None].astype(np.int64), "h": h, "c": c})
    texts = ["".join(chars) for chars in outputs]
    return [t.split(separator)[0] if stop_at_tune_end else t for t in texts]


def _state_shape(session) -> tuple[int, int]:
    shape = next(i.shape for i in session.get_inputs() if i.name == "h0")
    return int(shape[0]), int(shape[2])
