"""Score sentiment members and every ensemble of them on the validation split, by source, so a
version is chosen by a rule fixed in advance and never by the test split.

    python -m training.sentiment.select A=runs/sentiment/recovered-3/member-0 \\
        B=runs/sentiment/recovered-3/member-1 C=... --max-members 3 --json out.json

Each member's probabilities are computed once (torch, on the CPU, the same truncation as its
export); an ensemble averages them, as the exported graph does. Printed per candidate: IMDB,
Rotten Tomatoes and each trained-on domain's validation accuracy, the film reviews right
pooled over IMDB and Rotten Tomatoes, and the domain's ROC AUC. The rule itself is the
caller's (docs/selection/): this module only measures.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqserve.tokenization import TextEncoder, TruncationPolicy
from training.checkpoints import BEST, load_best
from training.config import load_config
from training.sentiment import data
from training.sentiment.evaluate import roc_auc
from training.sentiment.model import SentimentLSTM
from training.sentiment.train import logits_of

FILM_SOURCES = ("imdb", "rotten_tomatoes")
CACHE_FILE = "validation_probabilities.npz"  # in the run folder, keyed by best.pt's digest and the rows


def validation_rows() -> list[dict[str, Any]]:
    """The film validation split and every domain's held-out validation reviews (their
    "source" names them)."""
    rows = list(data.load_splits()["validation"])
    domains = load_config(data.TASK).domains
    for name in data.domain_names():
        if domains[name].training_table() is not None:  # a domain without one has no validation part
            rows += data.load_domain_training(name)["validation"]
    return rows


def positive_probabilities(run_dir: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    """P(positive) of the run's best checkpoint for every row, in the rows' order; computed
    once per checkpoint and rows (a minute a member on two cores), then read from the cache."""
    key = hashlib.sha256((run_dir / BEST).read_bytes()).hexdigest() + hashlib.sha256(
        json.dumps([(r["source"], r["text"]) for r in rows]).encode()).hexdigest()
    cache = run_dir / CACHE_FILE
    if cache.is_file():
        stored = np.load(cache)
        if str(stored["key"]) == key:
            return stored["probabilities"]
    probabilities = _positive_probabilities(run_dir, rows)
    np.savez(cache, key=key, probabilities=probabilities)
    return probabilities


def _positive_probabilities(run_dir: Path, rows: list[dict[str, Any]]) -> np.ndarray:
    model, checkpoint = load_best(run_dir, SentimentLSTM)
    tokens = checkpoint["config"]["tokenizer"]
    encoder = TextEncoder.from_file(run_dir / "tokenizer.json", TruncationPolicy(tokens["max_tokens"], tokens["head_tokens"]))
    logits = logits_of(model, encoder, encoder.token_ids([r["text"] for r in rows]), torch.device("cpu"))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))  # softmax, as the ensemble graph averages
    return shifted[:, 1] / shifted.sum(axis=1)


def score(probabilities: np.ndarray, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy per source, film reviews right (IMDB and Rotten Tomatoes pooled), and each
    non-film source's ROC AUC."""
    labels = np.array([r["label"] for r in rows])
    sources = np.array([r["source"] for r in rows])
    right = (probabilities > 0.5) == (labels == 1)
    scored: dict[str, Any] = {}
    for source in sorted(set(sources)):
        mask = sources == source
        scored[source] = round(float(right[mask].mean()), 4)
        if source not in FILM_SOURCES:
            scored[f"{source}_roc_auc"] = round(roc_auc(labels[mask].tolist(), probabilities[mask].tolist()), 4)
    film = np.isin(sources, FILM_SOURCES)
    scored["film_right"] = int(right[film].sum())
    scored["film_examples"] = int(film.sum())
    return scored


def candidates(members: dict[str, np.ndarray], rows: list[dict[str, Any]], max_members: int) -> list[dict[str, Any]]:
    """Every member alone and every set of up to `max_members`, averaged."""
    names = list(members)
    scored = []
    for size in range(1, max_members + 1):
        for chosen in itertools.combinations(names, size):
            mean = np.mean([members[n] for n in chosen], axis=0)
            scored.append({"candidate": " + ".join(chosen), "members": size} | score(mean, rows))
    return scored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.sentiment.select", description=__doc__.split("\n\n")[0])
    parser.add_argument("members", nargs="+", metavar="NAME=RUN_DIR")
    parser.add_argument("--max-members", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write every candidate's figures here")
    args = parser.parse_args(argv)
    runs = dict(member.split("=", 1) for member in args.members)
    rows = validation_rows()
    members = {name: positive_probabilities(Path(run), rows) for name, run in runs.items()}
    scored = candidates(members, rows, args.max_members)
    scored.sort(key=lambda c: (-c["film_right"], c["members"]))
    columns = [k for k in scored[0] if k != "candidate"]
    print("candidate".ljust(24), *(c[:18].rjust(18) for c in columns))
    for c in scored:
        print(c["candidate"].ljust(24), *(str(c[k]).rjust(18) for k in columns))
    if args.json:
        args.json.write_text(json.dumps({"members": runs, "candidates": scored}, indent=2) + "\n")


if __name__ == "__main__":
    main()
