"""The selection tool's arithmetic: per-source accuracy, pooled film reviews, the mean of the
members' probabilities."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from training.sentiment.select import candidates, score

ROWS = ([{"source": "imdb", "label": y} for y in (1, 0, 1, 0)] + [{"source": "rotten_tomatoes", "label": y} for y in (1, 0)]
        + [{"source": "fine_foods", "label": y} for y in (1, 0, 1, 0)])


def test_score_counts_each_source_and_the_pooled_film_reviews():
    probabilities = np.array([0.9, 0.2, 0.4, 0.1, 0.6, 0.7, 0.8, 0.3, 0.6, 0.7])
    scored = score(probabilities, ROWS)
    assert scored["imdb"] == 0.75 and scored["rotten_tomatoes"] == 0.5
    assert scored["film_right"] == 4 and scored["film_examples"] == 6
    assert scored["fine_foods"] == 0.75
    assert scored["fine_foods_roc_auc"] == 0.75  # 3 of the 4 positive-negative pairs ranked right
    assert "imdb_roc_auc" not in scored


def test_an_ensemble_is_scored_on_the_mean_of_its_members_probabilities():
    # A is right on IMDB only, B on the rest; their mean is right where one is sure and the other is not.
    a = np.array([0.99, 0.01, 0.99, 0.01, 0.4, 0.6, 0.4, 0.6, 0.4, 0.6])
    b = np.array([0.4, 0.6, 0.4, 0.6, 0.9, 0.1, 0.9, 0.1, 0.9, 0.1])
    scored = {c["candidate"]: c for c in candidates({"A": a, "B": b}, ROWS, max_members=2)}
    assert set(scored) == {"A", "B", "A + B"}
    assert scored["A"]["imdb"] == 1.0 and scored["A"]["rotten_tomatoes"] == 0.0
    assert scored["B"]["imdb"] == 0.0 and scored["B"]["fine_foods"] == 1.0
    assert scored["A + B"]["imdb"] == 1.0 and scored["A + B"]["fine_foods"] == 1.0 and scored["A + B"]["members"] == 2
