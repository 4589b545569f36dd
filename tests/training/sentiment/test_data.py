"""The data step's split: deterministic, stratified, both sources everywhere, no leaks."""

from __future__ import annotations

import json

from training.sentiment import data as sentiment
from training.splits import SPLITS


def test_splits_hold_both_sources_and_labels_and_do_not_overlap(data_cache):
    splits = sentiment.load_splits()
    meta = json.loads((data_cache / "sentiment" / "meta.json").read_text())
    assert meta["sha256"] == "d4acac55fe7f38d09d551abf248647e257ec1ee13f5bb9ce524c2fb0b613675d"
    for name in SPLITS:
        kinds = {(r["source"], r["label"]) for r in splits[name]}
        assert kinds == {("imdb", 0), ("imdb", 1), ("rotten_tomatoes", 0), ("rotten_tomatoes", 1)}
        assert meta["splits"][name] == len(splits[name])
    seen = [{r["text"].lower() for r in splits[name]} for name in SPLITS]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert not any("<br" in r["text"] for name in SPLITS for r in splits[name])


def test_cleaning():
    assert sentiment.clean("Good.<br /><br />Really  good &amp; fun\x96yes") == "Good. Really good & fun\u2013yes"


def test_split_is_deterministic():
    rows = [{"text": f"t{i}", "label": i % 2, "source": "imdb" if i % 3 else "rotten_tomatoes"} for i in range(300)]
    first = sentiment.stratified_split([dict(r) for r in rows], 5, 0.1, 0.1)
    second = sentiment.stratified_split([dict(r) for r in rows], 5, 0.1, 0.1)
    assert first == second
    assert sum(len(v) for v in first.values()) == 300
