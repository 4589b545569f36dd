"""Configs as data: one TOML file per task under `training/configs/`, with named profiles."""

from __future__ import annotations

import copy
import os
import tomllib
from pathlib import Path
from typing import Any

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


def load_config(task: str, profile: str = "full", overrides: list[str] = ()) -> dict[str, Any]:
    """The task's config with the profile's sections merged over the defaults, then
    `section.key=value` overrides (values parsed as TOML, else taken as strings)."""
    raw = tomllib.loads((CONFIG_DIR / f"{task}.toml").read_text())
    profiles = raw.pop("profiles", {})
    if profile not in profiles:
        raise SystemExit(f"unknown profile {profile!r} for {task}; known: {', '.join(profiles)}")
    config = copy.deepcopy(raw)
    for section, values in profiles[profile].items():
        config.setdefault(section, {}).update(values)
    for override in overrides:
        key, _, text = override.partition("=")
        section, _, name = key.partition(".")
        if not name or section not in config or name not in config[section]:
            raise SystemExit(f"--set {override!r}: expected section.key=value with a known key")
        try:
            value = tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            value = text
        config[section][name] = value
    config["task"] = task
    config["profile"] = profile
    return config
