"""BentoML's side of `benchmarks.peer_servers`: a BentoML 1.4 service with adaptive batching
(batchable API, at most 32 texts a batch), one worker; run with `bentoml serve` in .peers-venv.
Its API takes a list per request ({"texts": [...]}) and BentoML merges requests into batches."""

from __future__ import annotations

import os
from pathlib import Path

import bentoml

from benchmarks.peer_servers import BATCH, Classifier


@bentoml.service(workers=1)
class Sentiment:
    def __init__(self) -> None:
        self.classifier = Classifier(Path(os.environ["PEER_MODELS_DIR"]), os.environ["PEER_PRECISION"])

    @bentoml.api(batchable=True, max_batch_size=BATCH, max_latency_ms=10_000)
    def predict(self, texts: list[str]) -> list[dict]:
        return self.classifier(texts)
