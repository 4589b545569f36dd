"""Music task: prompt -> continuous batcher (prompt graph once, then the step graph for all
active streams together) -> text in chunks, so it can be streamed; a client that goes away
leaves the batch at the next hop. The complete tunes in an answer are checked, and a tune is
turned into MIDI, by music21 in worker processes (service.music21_workers), within limits
that keep the worst accepted call near a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass


from seqserve.abc import MAX_TUNE_CHARS, check_tune, complete_tunes, header_fields, to_midi
from seqserve.characters import CharVocabulary
from seqserve.generation import GenerationState, read_prompt
from service.batching import ANONYMOUS
from service.continuous import ContinuousGenerator
from service.music21_workers import Music21Timeout, Music21Workers
from service.step_state import StepState
from service.tasks.base import ServedModel

NEW_TUNE = "X:1\n"  # every training tune starts so
CHUNK_CHARS = 32  # characters per streamed event
CHECK_MARGIN_S = 0.5  # tune checks stop this long before the request deadline, so the answer gets out


@dataclass(frozen=True)
class TuneReport:
    abc: str
    title: str | None
    valid: bool
    reason: str | None  # why it is not valid (None when it is)


class MusicModel(ServedModel):
    task = "music"

    def prepare(self) -> None:
        self.vocabulary = CharVocabulary.load(self.model_dir / self.manifest.preprocessing["vocabulary"])
        self.prompt_graph, self.step_graph = self.sessions["prompt"], self.sessions["step"]
        self.generator: ContinuousGenerator | None = None
        self.music21 = Music21Workers(self.settings.music21_workers, self.settings.music21_timeout_s, self.metrics)

    def read_prompts(self, prompt: str, copies: int, after: GenerationState | None = None) -> GenerationState:
        return read_prompt(self.prompt_graph, self.vocabulary, prompt, batch=copies, after=after)

    async def start(self) -> None:
        on_cuda = self.step_graph.get_providers()[0] == "CUDAExecutionProvider"
        state = StepState(self.step_graph, "cuda" if on_cuda else "cpu", self.settings.cuda_device_id)
        s = self.settings
        self.generator = ContinuousGenerator(self.name, self.read_prompts, state, self.vocabulary.decode,
                                             self.model_metrics, max_streams=s.max_queue_size,
                                             max_active=s.music_max_active, chunk_chars=CHUNK_CHARS,
                                             steps_per_hop=s.music_steps_per_hop,
                                             client_max_streams=s.client_max_queue_size, deadline_s=s.request_timeout_s)
        self.generator.start()
        self.music21.start()

    async def warm_up(self) -> None:
        """One stream, then a full batch of streams through the generator (which times its
        steps: admission's estimates start from real figures), and music21 imported in every
        worker."""

        async def write(seed: int, length: int) -> None:
            async for _ in self.generator.submit(NEW_TUNE, length, 1.0, None, seed, checked=False):
                pass

        await write(0, 8)
        await asyncio.gather(*(write(seed, 24) for seed in range(self.settings.music_max_active)))
        await self.music21.warm_up()

    async def stop(self) -> None:
        if getattr(self, "generator", None) is not None:
            await self.generator.stop()
        if getattr(self, "music21", None) is not None:
            self.music21.stop()

    def clean_prompt(self, prompt: str | None) -> tuple[str, list[str]]:
        """The prompt the model will read, and the characters dropped from it; an empty or
        unreadable prompt starts a new tune."""
        if prompt is None:
            return NEW_TUNE, []
        kept, dropped = self.vocabulary.clean(prompt)
        return (kept or NEW_TUNE), dropped

    def generate(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
                 seed: int, client: str = ANONYMOUS) -> AsyncIterator[str]:
        """Admit the request (or refuse it now: see StepLoop._admit), then yield the generated
        text in chunks. The prompt must already be cleaned."""
        self.require_ready()
        return self.generator.submit(prompt, max_length, temperature, top_k, seed, client)

    async def check_tunes(self, text: str, time_left_s: float = 0.0) -> list[TuneReport]:
        """The complete tunes in `text`, each checked by the strict validity check. A tune
        longer than MAX_TUNE_CHARS is reported invalid without running music21 on it. With
        `time_left_s` (the request's deadline), checks still waiting for a music21 worker when
        it comes are given up and their tunes reported unchecked: the generated music is
        answered, not thrown away with a timeout."""
        loop = asyncio.get_running_loop()
        give_up_at = loop.time() + max(time_left_s - CHECK_MARGIN_S, 0.0) if time_left_s else None
        reports = []
        for tune in complete_tunes(text):
            title = header_fields(tune).get("T") or None
            if len(tune) > MAX_TUNE_CHARS:
                reports.append(TuneReport(tune, title, False, f"length: over {MAX_TUNE_CHARS:,} characters, not checked"))
                continue
            try:
                left = None if give_up_at is None else max(give_up_at - loop.time(), 0.0)
                check = await asyncio.wait_for(self.music21.call(check_tune, tune), left)
            except Music21Timeout as error:
                reports.append(TuneReport(tune, title, False, f"timeout: {error}"))
                continue
            except TimeoutError:
                reports.append(TuneReport(tune, title, False, "timeout: not checked before the request deadline "
                                                              "(the music21 workers were busy)"))
                continue
            reports.append(TuneReport(tune, check.title, check.valid, check.reason))
        return reports

    async def to_midi(self, tune: str) -> bytes:
        """One tune (at most MAX_TUNE_CHARS, checked by the schema) as a standard MIDI file;
        ValueError if music21 cannot read it, Music21Timeout past the time limit."""
        return await self.music21.call(to_midi, tune)
