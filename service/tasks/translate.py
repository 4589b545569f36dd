"""Translation task: texts -> continuous beam-search batch (encoder graph once per joining
sentence, then ONE decoder-step run per step for every live hypothesis of every sentence)
-> translations with their tokens and attention.

A sentence joins the running batch at the next step, with its request's beam size and
max_length, and leaves as soon as its search ends, so a request never waits for another's
search to finish. A request with several texts is answered when all of them are done.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field

from seqserve.translation import BeamBatch, BeamSearch, Source, SubwordCodec, Translation, describe, prepare_source
from service.batching import ANONYMOUS
from service.continuous import StepLoop
from service.metrics import ModelMetrics
from service.request_log import note
from service.tasks.base import ServedModel


def expected_steps(source: Source, max_length: int) -> int:
    """Decoder steps a sentence's search will likely take, for admission: a Spanish sentence
    about as long as its English, with room to spare; never more than max_length."""
    return min(max_length, 2 * len(source.ids) + 10)


# Up to this many characters a request is tokenized on the event loop (about 50 us for a
# sentence of 19 subwords, 342 us for one of 576 characters); a larger one (up to 32 x 1,000
# characters, some 20 ms by those figures) in a thread.
INLINE_TOKENIZE_CHARS = 1_000


@dataclass(eq=False)
class SentenceJob:
    client: str
    source: Source  # tokenized before admission: its length is the width it gives the batch
    beam_size: int
    max_length: int
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)
    search: BeamSearch | None = None
    batch_size: int = 0  # most sentences it shared a decoder step with (for the access log)


class ContinuousTranslator(StepLoop[SentenceJob]):
    def __init__(self, name: str, batch: BeamBatch, codec: SubwordCodec, metrics: ModelMetrics, max_requests: int,
                 max_active: int, steps_per_hop: int = 1, client_max_requests: int | None = None,
                 deadline_s: float = 0.0, max_rows: int | None = None, max_cells: int | None = None):
        super().__init__(name, metrics, max_requests, max_active, client_max_requests, deadline_s, max_rows,
                         max_cells)
        self.batch, self.codec, self.steps_per_hop = batch, codec, steps_per_hop
        self._active: list[SentenceJob] = []

    def _batch_requests(self) -> list[SentenceJob]:
        return self._active

    def _rows(self, job: SentenceJob) -> int:
        return job.beam_size

    def _width(self, job: SentenceJob) -> int:
        return len(job.source.ids)  # every hypothesis carries encoder memory as long as the longest source

    def _gone(self, job: SentenceJob) -> bool:
        return job.future.done()  # cancelled: the request went away

    async def translate(self, texts: list[str], beam_size: int, max_length: int, client: str = ANONYMOUS,
                        checked: bool = True) -> list[Translation]:
        """Admit all sentences or none (see StepLoop._admit), then await each translation."""
        loop = asyncio.get_running_loop()
        if checked:  # a full queue refuses before any tokenizing (admission checks again, with the steps)
            self._check_room(client, len(texts))
        if sum(len(text) for text in texts) <= INLINE_TOKENIZE_CHARS:
            sources = self.prepare(texts)
        else:
            sources = await asyncio.to_thread(self.prepare, texts)
        jobs = [SentenceJob(client, source, beam_size, max_length, loop.create_future()) for source in sources]
        steps = max(expected_steps(source, max_length) for source in sources)
        self._admit(jobs, steps, checked)
        try:
            results = list(await asyncio.gather(*(job.future for job in jobs)))
            note(batch_size=max(job.batch_size for job in jobs))
            return results
        finally:
            for job in jobs:  # if the caller went away, its sentences leave the batch at the next hop
                job.future.cancel()

    def _hop(self, joining: list[SentenceJob]) -> list[tuple[SentenceJob, Translation]]:
        gone = [job for job in self._active if self._gone(job)]
        if gone:
            self.batch.discard([job.search for job in gone])
            self._active = [job for job in self._active if not self._gone(job)]
        groups: dict[tuple[int, int], list[SentenceJob]] = defaultdict(list)
        for job in joining:
            groups[(job.beam_size, job.max_length)].append(job)
        now = time.perf_counter()
        for (beam_size, max_length), jobs in groups.items():  # one encoder run per group
            for job, search in zip(jobs, self.batch.add([job.source.ids for job in jobs], beam_size, max_length)):
                job.search = search
                self.metrics.waited(now - job.enqueued)
            self._active += jobs
        finished: set[int] = set()
        busiest = len(self.batch)
        for _ in range(self.steps_per_hop):
            if not self.batch:
                break
            sentences, rows = len(self.batch), sum(s.beam_size for s in self.batch.searches)
            started = time.perf_counter()
            finished |= {id(search) for search in self.batch.step()}
            elapsed = time.perf_counter() - started
            self.step_times.observe(rows, elapsed)
            self.metrics.run(sentences, elapsed)
        for job in self._active:
            job.batch_size = max(job.batch_size, busiest)
        done = [job for job in self._active if id(job.search) in finished]
        self._active = [job for job in self._active if id(job.search) not in finished]
        return [(job, describe(self.codec, job.source, job.search.result)) for job in done]

    def prepare(self, texts: list[str]) -> list[Source]:
        return [prepare_source(self.codec, text) for text in texts]

    def _hand_out(self, results: list[tuple[SentenceJob, Translation]]) -> None:
        for job, translation in results:
            if not job.future.done():
                job.future.set_result(translation)

    def _fail_all(self, joining: list[SentenceJob], error: Exception) -> None:
        for job in joining + self._active:
            if not job.future.done():
                job.future.set_exception(error)
        self._active = []
        self.batch.discard(list(self.batch.searches))


class TranslateModel(ServedModel):
    task = "translate"

    def prepare(self) -> None:
        pre = self.manifest.preprocessing
        self.codec = SubwordCodec.from_file(self.model_dir / pre.tokenizer, pre.max_source_tokens)
        self.translator: ContinuousTranslator | None = None

    async def start(self) -> None:
        s = self.settings
        batch = BeamBatch(self.sessions["encoder"], self.sessions["decoder_step"], self.codec)
        self.translator = ContinuousTranslator(self.name, batch, self.codec, self.model_metrics, s.max_queue_size,
                                               s.translate_max_active, s.translate_steps_per_hop,
                                               s.client_max_queue_size, s.request_timeout_s, s.translate_max_rows,
                                               s.translate_max_batch_tokens)
        self.translator.start()

    async def warm_up(self) -> None:
        """One sentence alone, a full batch of beam-4 searches, then (in batches of their own)
        the largest steps the batch can take: twice `translate_max_rows` hypotheses and twice
        `translate_max_batch_tokens` hypothesis-tokens, over short sources and over the
        longest the model reads. ONNX Runtime's memory arena keeps what its largest run
        needed, so the service's resident memory reaches its working size now, not when a
        client first sends the worst case."""
        await self.translator.translate(["Hello."], 1, 8, checked=False)
        await self.translator.translate(["I think we should go home now."] * self.settings.translate_max_active, 4, 16,
                                        checked=False)
        await asyncio.to_thread(self._largest_steps)

    def _largest_steps(self) -> None:
        s, beam, longest = self.settings, 8, self.codec.max_source_tokens
        rows, tokens = 2 * s.translate_max_rows, 2 * s.translate_max_batch_tokens
        sentence = self.codec.source_ids(["I think that we should all go home now, before it starts to rain again."])[0]
        for width in (max(min(tokens // rows, longest), 1), longest):
            sentences = max(min(rows, tokens // width) // beam, 1)
            source = (sentence * width)[:width]
            batch = BeamBatch(self.sessions["encoder"], self.sessions["decoder_step"], self.codec)
            for _ in range(2):  # joining a running batch, as sentences do
                batch.add([source] * (sentences // 2 or 1), beam, 8)
                batch.step()
            while batch:
                batch.step()

    async def translate(self, texts: list[str], beam_size: int, max_length: int,
                        client: str = ANONYMOUS) -> list[Translation]:
        self.require_ready()
        return await self.translator.translate(texts, beam_size, max_length, client)

    async def stop(self) -> None:
        if getattr(self, "translator", None) is not None:
            await self.translator.stop()
