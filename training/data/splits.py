"""Prepared splits on disk: gzip'd JSON lines in the cache, plus a meta.json."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

SPLITS = ("train", "validation", "test")


def write_split(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the file byte-identical across runs of the same data step.
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for row in rows:
            handle.write((json.dumps(row, ensure_ascii=False) + "\n").encode())


def read_split(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run `python -m training data <task>` first")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]
