"""Sentiment task: texts -> batcher -> (tokenize, classifier graph, softmax) -> predictions."""

from __future__ import annotations

import asyncio

from seqserve.sentiment import SentimentPrediction, decode, load_encoder
from service.batching import MicroBatcher
from service.tasks.base import ServedModel


class SentimentModel(ServedModel):
    task = "sentiment"

    def prepare(self) -> None:
        self.encoder = load_encoder(self.model_dir, self.manifest)
        self.session = self.sessions["classifier"]
        self.batcher: MicroBatcher[str, SentimentPrediction] | None = None

    def predict_batch(self, texts: list[str]) -> list[SentimentPrediction]:
        """Runs in the batcher's thread: one graph run for the whole batch."""
        ids, lengths = self.encoder.encode(texts)
        logits = self.session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]
        return decode(logits)

    async def start(self) -> None:
        s = self.settings
        self.batcher = MicroBatcher(self.name, self.predict_batch, self.metrics, s.max_batch_size,
                                    s.max_wait_ms / 1000, s.max_queue_size)
        self.batcher.start()

    async def warm_up(self) -> None:
        longest = " ".join(["good"] * self.encoder.truncation.max_tokens)
        await asyncio.to_thread(self.predict_batch, ["fine"])
        await asyncio.to_thread(self.predict_batch, [longest] * self.settings.max_batch_size)

    async def classify(self, texts: list[str]) -> list[SentimentPrediction]:
        self.require_ready()
        return await self.batcher.submit_many(texts)

    async def close(self) -> None:
        if getattr(self, "batcher", None) is not None:
            await self.batcher.stop()
        self.ready = False
        self.metrics.model_ready.labels(self.name).set(0)
