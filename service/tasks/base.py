"""A served model: load (verify, create sessions, warm up) and, per task, async predict methods."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import onnxruntime as ort

from seqserve.manifest import Manifest
from service import runtime
from service.config import Settings
from service.metrics import Metrics
from service.errors import ModelNotReady

log = logging.getLogger(__name__)


class ServedModel(ABC):
    task: ClassVar[str]

    def __init__(self, model_dir: Path, manifest: Manifest, settings: Settings, metrics: Metrics):
        self.model_dir = model_dir
        self.manifest = manifest
        self.settings = settings
        self.metrics = metrics  # the app's (music21 calls); this model's own series: model_metrics
        self.model_metrics = metrics.model(manifest.name, manifest.version)
        self.sessions: dict[str, ort.InferenceSession] = {}
        self.precision, self.precision_reason = runtime.choose_precision(
            manifest, settings.precision, runtime.planned_device(settings))
        self.ready = False
        self.error: str | None = "loading"

    @property
    def name(self) -> str:
        return self.manifest.name

    async def load(self) -> None:
        """Verify every file against the manifest, create sessions, warm up; never raises:
        a model that fails stays not-ready with the reason in `error`."""
        try:
            await asyncio.to_thread(self._load_sync)
            await self.start()
            await self.warm_up()
        except Exception as error:
            self.error = f"{type(error).__name__}: {error}"
            log.error("model %s not loaded: %s", self.manifest.id, self.error)
            await self.close()
            return
        self.ready, self.error = True, None
        self.model_metrics.ready(True)
        log.info("model %s ready on %s", self.manifest.id, self.provider)

    def _load_sync(self) -> None:
        problems = self.manifest.verify_files(self.model_dir)
        if problems:
            raise ValueError("files do not match the manifest: " + "; ".join(problems))
        log.info("model %s: %s (%s)", self.manifest.id, self.precision, self.precision_reason)
        for graph_name, file in self.manifest.graph_files(self.precision).items():
            self.sessions[graph_name] = runtime.create_session(self.model_dir / file, self.settings,
                                                               threads=self.session_threads(graph_name))
        self.prepare()

    def session_threads(self, graph_name: str) -> int:
        """Intra-op threads for this graph's session; 0: INTRA_OP_THREADS, else ONNX Runtime's default."""
        return 0

    @property
    def provider(self) -> str | None:
        first = next(iter(self.sessions.values()), None)
        return first.get_providers()[0] if first else None

    def require_ready(self) -> None:
        if not self.ready:
            raise ModelNotReady(f"model {self.manifest.id} is not ready: {self.error}")

    @abstractmethod
    def prepare(self) -> None:
        """Load what besides the sessions the task needs (tokenizer...); runs in a thread."""

    @abstractmethod
    async def start(self) -> None:
        """Start the task's batchers."""

    @abstractmethod
    async def warm_up(self) -> None:
        """Run the shapes the batcher will produce once, so the first request is not slow."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop the task's batchers (and workers); safe to call when they never started."""

    async def close(self) -> None:
        await self.stop()
        self.ready = False
        self.model_metrics.ready(False)

    def describe(self) -> dict[str, Any]:
        """What /v1/models reports."""
        m = self.manifest
        return {
            "name": m.name,
            "version": m.version,
            "task": m.task,
            "ready": self.ready,
            "error": self.error,
            "provider": self.provider,
            "precision": self.precision,
            "precision_reason": self.precision_reason,
            "providers": {name: s.get_providers() for name, s in self.sessions.items()},
            "graphs": {name: g.model_dump() for name, g in m.graphs.items()},
            "files": {name: f.sha256 for name, f in m.files.items()},
            "metrics": m.metrics if self.precision == "fp32" else m.precisions[self.precision].metrics,
            "precisions": {name: {"servable": v.servable, "reason": v.reason, "quality": v.quality}
                           for name, v in m.precisions.items()},
        }
