"""Music task: prompt -> continuous batcher (prompt graph once, then the step graph for all
active streams together) -> text in chunks, so it can be streamed; a client that goes away
leaves the batch at the next hop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import numpy as np

from seqserve.characters import CharVocabulary
from seqserve.generation import GenerationState, read_prompt, reads_clock
from service.continuous import ContinuousGenerator
from service.step_state import StepState
from service.tasks.base import ServedModel

NEW_TUNE = "X:1\n"  # every training tune starts so
CHUNK_CHARS = 32  # characters per streamed event


class MusicModel(ServedModel):
    task = "music"

    def prepare(self) -> None:
        self.vocabulary = CharVocabulary.load(self.model_dir / self.manifest.preprocessing["vocabulary"])
        self.prompt_graph, self.step_graph = self.sessions["prompt"], self.sessions["step"]
        self.generator: ContinuousGenerator | None = None

    def read_prompts(self, prompt: str, copies: int) -> GenerationState:
        return read_prompt(self.prompt_graph, self.vocabulary, prompt, batch=copies)

    async def start(self) -> None:
        on_cuda = self.step_graph.get_providers()[0] == "CUDAExecutionProvider"
        state = StepState(self.step_graph, "cuda" if on_cuda else "cpu", self.settings.cuda_device_id)
        self.generator = ContinuousGenerator(self.name, self.read_prompts, state, self.vocabulary.decode,
                                             self.metrics, max_streams=self.settings.max_queue_size,
                                             max_active=self.settings.music_max_active, chunk_chars=CHUNK_CHARS,
                                             steps_per_hop=self.settings.music_steps_per_hop)
        self.generator.start()

    async def warm_up(self) -> None:
        """A prompt read, a full batch's step, and one stream through the generator."""
        await asyncio.to_thread(self.read_prompts, NEW_TUNE, 1)
        state = await asyncio.to_thread(self.read_prompts, NEW_TUNE, self.settings.music_max_active)
        ids = np.zeros((self.settings.music_max_active, 1), dtype=np.int64)
        feeds = {"token": ids, "h": state.h, "c": state.c} | ({"clock": ids} if reads_clock(self.step_graph) else {})
        await asyncio.to_thread(self.step_graph.run, None, feeds)
        async for _ in self.generator.submit(NEW_TUNE, 8, 1.0, None, 0):
            pass

    async def close(self) -> None:
        if getattr(self, "generator", None) is not None:
            await self.generator.stop()
        self.ready = False
        self.metrics.model_ready.labels(self.name).set(0)

    def clean_prompt(self, prompt: str | None) -> tuple[str, list[str]]:
        """The prompt the model will read, and the characters dropped from it; an empty or
        unreadable prompt starts a new tune."""
        if prompt is None:
            return NEW_TUNE, []
        kept, dropped = self.vocabulary.clean(prompt)
        return (kept or NEW_TUNE), dropped

    def generate(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
                 seed: int) -> AsyncIterator[str]:
        """Admit the request (or refuse it now with QueueFull), then yield the generated text
        in chunks. The prompt must already be cleaned."""
        self.require_ready()
        return self.generator.submit(prompt, max_length, temperature, top_k, seed)
