"""Drawing examples and batches, seeded, so that a run (and a resumed run) is reproducible."""

from __future__ import annotations

import random
from typing import Any


def subsample(rows: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rows drawn with `seed` (all of them when count is 0 or more than there are)."""
    if not count or count >= len(rows):
        return rows
    return random.Random(seed).sample(rows, count)


def length_bucketed_batches(indices: list[int], lengths: list[int], batch_size: int,
                            rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches so each batch holds similar lengths
    (little padding) while the order of batches stays random."""
    order = list(indices)
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches
