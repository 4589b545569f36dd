"""Finds the models under the models directory and loads the newest version of each task."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from seqserve.manifest import Manifest, newest_version_dir
from service.config import Settings
from service.metrics import Metrics
from service.tasks.base import ServedModel
from service.tasks.music import MusicModel
from service.tasks.sentiment import SentimentModel
from service.tasks.translate import TranslateModel
from service.errors import ModelsDirMissing

log = logging.getLogger(__name__)

TASKS: dict[str, type[ServedModel]] = {model.task: model for model in (SentimentModel, MusicModel, TranslateModel)}


def newest_versions(models_dir: Path) -> dict[str, Path]:
    """<models_dir>/<task>/<version>/manifest.json -> {task: newest version dir}."""
    if not models_dir.is_dir():
        raise ModelsDirMissing(f"models directory {models_dir} does not exist (set SEQSERVE_MODELS_DIR)")
    found = {task_dir.name: newest_version_dir(task_dir) for task_dir in sorted(models_dir.iterdir())}
    return {task: version for task, version in found.items() if version is not None}


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: Metrics):
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, ServedModel] = {}
        self.failed: dict[str, str] = {}  # task -> why it could not even be built

    async def load_all(self) -> None:
        for task, model_dir in newest_versions(self.settings.models_dir).items():
            if task not in self.settings.expected_models:
                log.info("model %s/%s not loaded: its task is not in expected_models", task, model_dir.name)
                continue
            try:
                manifest = Manifest.load(model_dir)
                self.models[task] = TASKS[manifest.task](model_dir, manifest, self.settings, self.metrics)
            except Exception as error:
                self.failed[task] = f"{type(error).__name__}: {error}"
                log.error("model %s not loaded: %s", model_dir, self.failed[task])
        if not self.models and not self.failed:
            log.warning("no models under %s", self.settings.models_dir)
        await asyncio.gather(*(model.load() for model in self.models.values()))

    def not_ready(self) -> dict[str, str]:
        """Each expected task that is not loaded and warm, and why, in words a client may read
        (no absolute paths: the models directory is named as such)."""
        missing = {task: "no model of this task under the models directory" for task in self.settings.expected_models
                   if task not in self.models and task not in self.failed}
        missing.update(self.failed)
        missing.update({task: model.error or "not ready" for task, model in self.models.items() if not model.ready})
        root = str(self.settings.models_dir.resolve())
        return {task: why.replace(root, "<models_dir>") for task, why in missing.items()}

    def get(self, task: str) -> ServedModel | None:
        return self.models.get(task)

    async def close(self) -> None:
        await asyncio.gather(*(model.close() for model in self.models.values()))
