"""Music task: prompt -> prompt graph (reads it in one run) -> step graph, one character per
run, sampled with the request's own seeded generator; text comes out in chunks so it can
be streamed, and a client that goes away stops its generation at the next chunk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
import numpy as np

from seqserve.characters import CharVocabulary
from seqserve.generation import GenerationState, read_prompt, step
from service.batching import QueueFull
from service.tasks.base import ServedModel

NEW_TUNE = "X:1\n"  # every training tune starts so
CHUNK_CHARS = 32  # characters per thread hop, and per streamed event


class MusicModel(ServedModel):
    task = "music"

    def prepare(self) -> None:
        self.vocabulary = CharVocabulary.load(self.model_dir / self.manifest.preprocessing["vocabulary"])
        self.prompt_graph, self.step_graph = self.sessions["prompt"], self.sessions["step"]
        self.active = 0

    async def start(self) -> None:
        pass

    async def warm_up(self) -> None:
        state = await asyncio.to_thread(read_prompt, self.prompt_graph, self.vocabulary, NEW_TUNE)
        await asyncio.to_thread(self._advance, state, 4, 1.0, None, np.random.default_rng(0))

    async def close(self) -> None:
        self.ready = False
        self.metrics.model_ready.labels(self.name).set(0)

    def clean_prompt(self, prompt: str | None) -> tuple[str, list[str]]:
        """The prompt the model will read, and the characters dropped from it; an empty or
        unreadable prompt starts a new tune."""
        if prompt is None:
            return NEW_TUNE, []
        kept, dropped = self.vocabulary.clean(prompt)
        return (kept or NEW_TUNE), dropped

    def _advance(self, state: GenerationState, count: int, temperature: float, top_k: int | None,
                 generator: np.random.Generator) -> str:
        ids = [int(step(self.step_graph, state, temperature, top_k, [generator])[0]) for _ in range(count)]
        return self.vocabulary.decode(ids)

    def generate(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
                 seed: int) -> AsyncIterator[str]:
        """Admit the request (or refuse it now), then yield the generated text in chunks. The
        prompt must already be cleaned."""
        self.require_ready()
        if self.active >= self.settings.max_queue_size:
            self.metrics.rejected.labels(self.name).inc()
            raise QueueFull(f"{self.name}: {self.active} generations in progress")
        return self._generate(prompt, max_length, temperature, top_k, seed)

    async def _generate(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
                        seed: int) -> AsyncIterator[str]:
        self.active += 1
        try:
            generator = np.random.default_rng(seed)
            state = await asyncio.to_thread(read_prompt, self.prompt_graph, self.vocabulary, prompt)
            produced = 0
            while produced < max_length:
                count = min(CHUNK_CHARS, max_length - produced)
                started = time.perf_counter()
                text = await asyncio.to_thread(self._advance, state, count, temperature, top_k, generator)
                self.metrics.inference_seconds.labels(self.name).observe(time.perf_counter() - started)
                self.metrics.batch_size.labels(self.name).observe(1)
                produced += count
                yield text
        finally:
            self.active -= 1
