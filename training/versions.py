"""Model versions under models/<task>/: which one an export writes, and writing it without
ever destroying one (no torch here).

By default an export writes the next free version (one more than the highest under
models/<task>/), and it refuses a version that already exists unless told to replace it
(`force`). The version is built in a temporary sibling folder and renamed into place only
once it is complete; a replaced version is moved aside first and removed only after the new
one is in place. The service serves the highest version of each task.
"""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqserve.manifest import Manifest, newest_version_dir
from training.quantize import Quality, add_int8


class VersionExists(FileExistsError):
    """The version to write is already there and replacing it was not asked for."""


def next_version(task_dir: Path) -> str:
    """One more than the highest numeric version under `task_dir` (as the service finds
    versions: `newest_version_dir`), "1" if there is none; never a name already taken."""
    newest = newest_version_dir(task_dir)
    number = int(newest.name) + 1 if newest is not None and newest.name.isdigit() else 1
    while (Path(task_dir) / str(number)).exists():  # e.g. a folder without a manifest
        number += 1
    return str(number)


def check_target(model_dir: Path, force: bool = False) -> None:
    """Refuse to write over an existing version unless `force`."""
    model_dir = Path(model_dir)
    if (model_dir.exists() or model_dir.is_symlink()) and not force:
        raise VersionExists(f"{model_dir} already exists: refusing to replace that version. Pass --force to replace it.")


@contextmanager
def staged(model_dir: Path, force: bool = False) -> Iterator[Path]:
    """An empty temporary folder beside the version, to build it in; `publish` renames it
    into place. Refuses at once (before any export work) if the version exists and not
    `force`. Whatever is left of the folder is removed on the way out, failure or not."""
    model_dir = Path(model_dir)
    check_target(model_dir, force)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkdtemp: its mode 0700 would become the version's, unreadable to a service run as another user
    staging = model_dir.with_name(f".{model_dir.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already gone once published


def publish(manifest: Manifest, staging: Path, model_dir: Path, evaluate: Callable[..., dict[str, Any]] | None,
            force: bool = False, quality: Quality | None = None) -> Manifest:
    """Evaluate the staged graphs, write their metrics into the manifest, add the INT8 variant
    (evaluated and judged against `quality`, the task's headline metrics; neither when
    `evaluate` is None: a candidate, never a served version), then rename the
    staged folder into place as the version. An existing version is refused unless `force`;
    then it is moved aside, and removed only after the new version is in place (put back if
    that rename fails). Nothing is deleted before the new version is complete."""
    model_dir = Path(model_dir)
    manifest.save(staging)
    if evaluate is not None:
        manifest.metrics |= evaluate(staging)
        manifest.save(staging)
        if quality is not None:
            manifest = add_int8(staging, evaluate, quality)
    check_target(model_dir, force)  # again: it may have appeared while exporting
    if not (model_dir.exists() or model_dir.is_symlink()):
        staging.rename(model_dir)  # fails, rather than replace it, if a version appeared since
        return manifest
    aside = model_dir.with_name(f".{model_dir.name}.replaced-{uuid.uuid4().hex[:8]}")
    model_dir.rename(aside)
    try:
        staging.rename(model_dir)
    except BaseException:
        aside.rename(model_dir)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    else:
        aside.unlink()
    return manifest



def newest_model_dir(task_dir: Path) -> Path:
    """The version the service serves (evaluate's default)."""
    found = newest_version_dir(task_dir)
    if found is None:
        raise SystemExit(f"no exported model under {task_dir}: run `python -m training export` first")
    return found
