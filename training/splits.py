"""Prepared splits on disk: gzip'd JSON lines in the cache, `<cache>/<task>/`, plus a meta.json."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from training.config import cache_dir

SPLITS = ("train", "validation", "test")


def data_dir(task: str) -> Path:
    return cache_dir() / task


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


def write_splits(task: str, splits: dict[str, list[dict[str, Any]]]) -> None:
    for name, rows in splits.items():
        write_split(data_dir(task) / f"{name}.jsonl.gz", rows)


def write_meta(task: str, meta: dict[str, Any]) -> dict[str, Any]:
    """The data step's description of what it fetched and how it split it."""
    (data_dir(task) / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def load_splits(task: str) -> dict[str, list[dict[str, Any]]]:
    return {name: read_split(data_dir(task) / f"{name}.jsonl.gz") for name in SPLITS}


def load_meta(task: str) -> dict[str, Any]:
    return json.loads((data_dir(task) / "meta.json").read_text())
