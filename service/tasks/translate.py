"""Translation task: texts -> batcher -> (tokenize, encoder graph, beam search over the
decoder-step graph) -> translations with their tokens and attention.

Concurrent requests share one beam search when they ask for the same beam size and
max_length; the batcher groups a batch's jobs by those settings.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from seqserve.translation import SubwordCodec, Translation, beam_search, describe, prepare_source
from service.batching import MicroBatcher
from service.tasks.base import ServedModel


@dataclass(frozen=True)
class TranslationJob:
    text: str
    beam_size: int
    max_length: int


class TranslateModel(ServedModel):
    task = "translate"

    def prepare(self) -> None:
        pre = self.manifest.preprocessing
        self.codec = SubwordCodec.from_file(self.model_dir / pre["tokenizer"], pre["max_source_tokens"])
        self.encoder, self.step = self.sessions["encoder"], self.sessions["decoder_step"]
        self.batcher: MicroBatcher[TranslationJob, Translation] | None = None

    def translate_batch(self, jobs: list[TranslationJob]) -> list[Translation]:
        """Runs in the batcher's thread: one beam search per (beam size, max_length) group."""
        groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[(job.beam_size, job.max_length)].append(index)
        results: list[Translation | None] = [None] * len(jobs)
        for (beam_size, max_length), members in groups.items():
            sources = [prepare_source(self.codec, jobs[i].text) for i in members]
            hypotheses = beam_search(self.encoder, self.step, self.codec, [s.ids for s in sources], beam_size,
                                     max_length)
            for i, source, hypothesis in zip(members, sources, hypotheses):
                results[i] = describe(self.codec, source, hypothesis)
        return results

    async def start(self) -> None:
        s = self.settings
        self.batcher = MicroBatcher(self.name, self.translate_batch, self.metrics, s.max_batch_size,
                                    s.max_wait_ms / 1000, s.max_queue_size)
        self.batcher.start()

    async def warm_up(self) -> None:
        await asyncio.to_thread(self.translate_batch, [TranslationJob("Hello.", 1, 8)])
        await asyncio.to_thread(self.translate_batch, [TranslationJob("I think we should go home now.", 4, 16)]
                                * self.settings.max_batch_size)

    async def translate(self, texts: list[str], beam_size: int, max_length: int) -> list[Translation]:
        self.require_ready()
        return await self.batcher.submit_many([TranslationJob(t, beam_size, max_length) for t in texts])

    async def close(self) -> None:
        if getattr(self, "batcher", None) is not None:
            await self.batcher.stop()
        self.ready = False
        self.metrics.model_ready.labels(self.name).set(0)

