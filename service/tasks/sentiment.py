"""Sentiment task: texts -> batcher -> (tokenize, classifier graph, softmax) -> predictions."""

from __future__ import annotations

import asyncio
import functools
import os
import time

from seqserve.sentiment import SentimentPrediction, decode, load_encoder
from service.batching import ANONYMOUS, MicroBatcher
from service import runtime
from service.tasks.base import ServedModel


def length_groups(lengths: list[int], max_ratio: float = 2.0, min_length: int = 16) -> list[list[int]]:
    """Indices sorted by length, cut where a group's longest would exceed `max_ratio` times its
    shortest (lengths under `min_length` count as min_length: short ones cost little anyway)."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    for i in order:
        if groups and max(lengths[i], min_length) <= max_ratio * max(lengths[groups[-1][0]], min_length):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


class SentimentModel(ServedModel):
    task = "sentiment"

    def prepare(self) -> None:
        self.encoder = load_encoder(self.model_dir, self.manifest)
        self.session = self.sessions["classifier"]
        # Lane 0 runs on the session the base class made (with session_threads); the others get their own.
        path = self.model_dir / self.manifest.graph_files(self.precision)["classifier"]
        self.lane_sessions = [self.session] + [
            runtime.create_session(path, self.settings, threads=self.session_threads("classifier"))
            for _ in range(self.lanes - 1)]
        self.batcher: MicroBatcher[str, SentimentPrediction] | None = None

    @functools.cached_property
    def lanes(self) -> int:
        """Batches run at once, each on its own session. On the CPU, two single-thread sessions
        running two batches at once keep both cores busier than one two-thread session running
        one: 805 vs 727 reviews/s served at concurrency 64 on this project's 2-core machine."""
        auto = 1 if runtime.planned_device(self.settings) == "cuda" else min(2, os.cpu_count() or 1)
        return self.settings.sentiment_lanes or auto

    def session_threads(self, graph_name: str) -> int:
        if self.lanes == 1:
            return 0
        return self.settings.intra_op_threads or max(1, (os.cpu_count() or 1) // self.lanes)

    def predict_batch(self, texts: list[str], session=None) -> list[SentimentPrediction]:
        """Runs in a batcher lane's thread: the batch sorted by length and run in groups of
        similar length, so a one-line review never pays for a 400-token one's padding."""
        session = session or self.session
        sequences = self.encoder.token_ids(texts)
        predictions: list[SentimentPrediction | None] = [None] * len(texts)
        for group in length_groups([len(s) for s in sequences]):
            ids, lengths = self.encoder.pad([sequences[i] for i in group])
            logits = session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]
            for i, prediction in zip(group, decode(logits)):
                predictions[i] = prediction
        return predictions

    async def start(self) -> None:
        s = self.settings
        lanes = [functools.partial(self.predict_batch, session=session) for session in self.lane_sessions]
        self.batcher = MicroBatcher(self.name, lanes, self.model_metrics, s.sentiment_max_batch_size,
                                    s.sentiment_max_wait_ms / 1000, s.max_queue_size, s.client_max_queue_size,
                                    s.request_timeout_s)
        self.batcher.start()

    async def warm_up(self) -> None:
        """Each lane's session through the smallest and the costliest batch (the first run of a
        shape is slower), then the costliest timed once more for admission's estimates."""
        longest = " ".join(["good"] * self.encoder.truncation.max_tokens)
        full = self.settings.sentiment_max_batch_size
        for session in self.lane_sessions:
            await asyncio.to_thread(self.predict_batch, ["fine"], session)
            await asyncio.to_thread(self.predict_batch, [longest] * full, session)
        started = time.perf_counter()
        await asyncio.to_thread(self.predict_batch, [longest] * full, self.lane_sessions[0])
        self.batcher.batch_times.observe(full, time.perf_counter() - started)

    async def classify(self, texts: list[str], client: str = ANONYMOUS) -> list[SentimentPrediction]:
        self.require_ready()
        return await self.batcher.submit_many(texts, client)

    async def stop(self) -> None:
        if getattr(self, "batcher", None) is not None:
            await self.batcher.stop()
