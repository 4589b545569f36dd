"""Music task: prompt -> continuous batcher (prompt graph once, then the step graph for all
active streams together) -> text in chunks, so it can be streamed; a client that goes away
leaves the batch at the next hop.

`ContinuousGenerator`: each step is ONE step-graph run for all active rows, each row sampled
with its own seeded generator and settings. An LSTM's state is a fixed-size row per stream,
so joining and leaving is appending and deleting rows. Each row's arithmetic does not depend
on the other rows, so a stream's output depends on its seed and settings only, not on who
else was generating. The complete tunes in an answer are checked, and a tune is
turned into MIDI, by music21 in worker processes (service.music21_workers), within limits
that keep the worst accepted call near a second."""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import numpy as np

from seqserve.abc import MAX_TUNE_CHARS, TUNE_SEPARATOR, check_tune, complete_tunes, header_fields, to_midi
from seqserve.bar_clock import BarClock
from seqserve.characters import CharVocabulary
from seqserve.generation import GenerationState, read_prompt, sample_step
from service.batching import ANONYMOUS
from service.continuous import StepLoop
from service.metrics import ModelMetrics
from service.errors import InvalidInput, Music21Timeout
from service.music21_workers import Music21Workers
from service.step_state import StepState
from service.tasks.base import ServedModel

NEW_TUNE = "X:1\n"  # every training tune starts so
CHUNK_CHARS = 32  # characters per streamed event
CHECK_MARGIN_S = 0.5  # tune checks stop this long before the request deadline, so the answer gets out


assert TUNE_SEPARATOR == "\n\n", "TuneEnd reads the separator as two newlines"


class TuneEnd:
    """Watches text character by character for the end of a complete tune, as `complete_tunes`
    splits text: a piece that starts with `X:` (after blank lines), followed by TUNE_SEPARATOR.
    Constant work per character, for `stop_at_end_of_tune`."""

    def __init__(self, text: str = "") -> None:
        self.head = ""  # the first two characters of the current piece, leading newlines left out
        self.newline = False  # the piece ends with a newline not yet part of a separator
        self.ended = False  # the last character fed ended a complete tune
        for character in text:
            self.feed(character)

    def feed(self, character: str) -> bool:
        self.ended = False
        if character == "\n" and self.newline:
            self.ended, self.head, self.newline = self.head == "X:", "", False
        else:
            self.newline = character == "\n"
            if len(self.head) < 2 and (self.head or not self.newline):
                self.head += character
        return self.ended


@dataclass(eq=False)
class Stream:
    client: str
    prompt: str
    remaining: int
    temperature: float
    top_k: int | None
    seed: int
    chunks: asyncio.Queue = field(default_factory=asyncio.Queue)  # str, then None (done) or an exception
    pending: list[str] = field(default_factory=list)  # characters written since the last chunk
    cancelled: bool = False
    clock: BarClock | None = None  # for a model that reads the bar clock
    tune_end: TuneEnd | None = None  # stop at the end of the first complete tune

    @functools.cached_property
    def generator(self) -> np.random.Generator:
        # Seeded on first use, in the step thread: seeding costs ~50 us of hashing that the
        # event loop would otherwise pay per request.
        return np.random.default_rng(self.seed)


@dataclass(eq=False)
class PromptRead:
    """Streams with the same prompt, whose prompt is being read (in pieces, across hops)."""

    prompt: str
    streams: list[Stream]
    done_chars: int = 0
    state: GenerationState | None = None


@dataclass
class RowSettings:
    """The active rows' sampling settings in row order, as `sample_step` takes them: rebuilt
    when rows join or leave, not at every step (the step loop's Python time is per step)."""

    temperatures: np.ndarray
    top_k: list[int | None] | None  # None: no row limits its choice
    generators: list[np.random.Generator]
    clocks: list[BarClock] | None  # None: the graph does not read the bar clock

    @classmethod
    def of(cls, streams: list[Stream], reads_clock: bool) -> RowSettings:
        top_k = [s.top_k for s in streams]
        return cls(np.array([s.temperature for s in streams], dtype=np.float64),
                   None if all(k is None for k in top_k) else top_k,
                   [s.generator for s in streams], [s.clock for s in streams] if reads_clock else None)


# Prompt characters read per hop, at most (about 70 ms for the 1024-unit LSTM on 2 CPU cores):
# a long prompt is read in pieces across hops, so it never stalls the streams already writing.
PROMPT_CHARS_PER_HOP = 512


class ContinuousGenerator(StepLoop[Stream]):
    def __init__(self, name: str, read_prompts: Callable[..., GenerationState], state: StepState,
                 decode: Callable[[list[int]], str], metrics: ModelMetrics, max_streams: int,
                 max_active: int, chunk_chars: int = 32, steps_per_hop: int = 4,
                 client_max_streams: int | None = None, deadline_s: float = 0.0,
                 prompt_chars_per_hop: int = PROMPT_CHARS_PER_HOP):
        super().__init__(name, metrics, max_streams, max_active, client_max_streams, deadline_s)
        self.read_prompts = read_prompts  # (prompt piece, copies, after) -> state of `copies` rows
        self.state = state  # the active rows' state, on the step graph's device
        self.decode = decode
        self.chunk_chars = chunk_chars
        self.steps_per_hop = steps_per_hop
        self.prompt_chars_per_hop = prompt_chars_per_hop
        self._active: list[Stream] = []
        self._row_settings = RowSettings.of([], state.reads_clock)  # the settings of _active's rows
        self._reading: list[PromptRead] = []  # admitted, prompt not yet read: in arrival order

    def _batch_requests(self) -> list[Stream]:
        return self._active + [stream for read in self._reading for stream in read.streams]

    def _gone(self, stream: Stream) -> bool:
        return stream.cancelled

    def submit(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
               seed: int, client: str = ANONYMOUS, checked: bool = True,
               stop_at_end_of_tune: bool = False) -> AsyncIterator[str]:
        """Admit a stream now (or refuse: see StepLoop._admit) and return its chunks."""
        stream = Stream(client, prompt, max_length, temperature, top_k, seed,
                        tune_end=TuneEnd(prompt) if stop_at_end_of_tune else None)
        self._admit([stream], steps=max_length, checked=checked)
        return self._chunks(stream)

    async def _chunks(self, stream: Stream) -> AsyncIterator[str]:
        try:
            while True:
                item = await stream.chunks.get()
                if item is None:
                    return
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            stream.cancelled = True  # a client that went away leaves the batch at the next hop

    def _hand_out(self, results: list[tuple[Stream, str, bool]]) -> None:
        for stream, text, done in results:
            if text:
                stream.chunks.put_nowait(text)
            if done:
                stream.chunks.put_nowait(None)

    def _fail_all(self, joining: list[Stream], error: Exception) -> None:
        for stream in joining + self._batch_requests():
            stream.chunks.put_nowait(error)
        self._active, self._reading = [], []
        self._row_settings = RowSettings.of([], self.state.reads_clock)
        self.state.keep(np.arange(0))

    def _hop(self, joining: list[Stream]) -> list[tuple[Stream, str, bool]]:
        """In the worker thread: admit, step, and return (stream, text, done) to hand out."""
        self._join(joining)
        self._drop([i for i, s in enumerate(self._active) if s.cancelled])
        for _ in range(self.steps_per_hop):
            if not self._active or self._step():
                break
        out, done_rows = [], []
        for row, stream in enumerate(self._active):
            done = stream.remaining == 0
            if done or len(stream.pending) >= self.chunk_chars:
                out.append((stream, "".join(stream.pending), done))
                stream.pending = []
            if done:
                done_rows.append(row)
        self._drop(done_rows)
        return out

    def _join(self, streams: list[Stream]) -> None:
        """Queue the prompts of joining streams, then read at most `prompt_chars_per_hop`
        characters of the queued prompts, oldest first; a stream whose prompt is read joins
        the batch. Identical prompts (a new tune) joining together are read once, as one batch."""
        by_prompt: dict[str, list[Stream]] = defaultdict(list)
        for stream in streams:
            by_prompt[stream.prompt].append(stream)
        self._reading += [PromptRead(prompt, group) for prompt, group in by_prompt.items()]
        budget = self.prompt_chars_per_hop
        while self._reading and budget > 0:
            read = self._reading[0]
            if all(stream.cancelled for stream in read.streams):
                self._reading.pop(0)
                continue
            piece = read.prompt[read.done_chars:read.done_chars + budget]
            read.state = self.read_prompts(piece, len(read.streams), read.state)
            read.done_chars += len(piece)
            budget -= len(piece)
            if read.done_chars < len(read.prompt):
                break
            self._reading.pop(0)
            for stream, clock in zip(read.streams, read.state.clocks or [None] * len(read.streams)):
                stream.clock = clock
            self.state.append(read.state)
            self._active += read.streams
            self._row_settings = RowSettings.of(self._active, self.state.reads_clock)

    def _drop(self, rows: list[int]) -> None:
        if not rows:
            return
        keep = np.setdiff1d(np.arange(len(self._active)), rows)
        self._active = [self._active[i] for i in keep]
        self._row_settings = RowSettings.of(self._active, self.state.reads_clock)
        self.state.keep(keep)

    def _step(self) -> bool:
        """Sample, read the clock and run the step graph for every active stream; the whole of
        it is timed, since admission's estimates must count what a step really costs. Returns
        whether a stream is done."""
        started = time.perf_counter()
        streams, rows = self._active, self._row_settings
        characters = sample_step(self.state, rows.temperatures, rows.top_k, rows.generators, self.decode, rows.clocks)
        finished = False
        for stream, character in zip(streams, characters):
            stream.pending.append(character)
            stream.remaining -= 1
            if stream.tune_end is not None and stream.tune_end.feed(character):
                stream.remaining = 0
            finished = finished or not stream.remaining
        elapsed = time.perf_counter() - started
        self.step_times.observe(len(streams), elapsed)
        self.metrics.run(len(streams), elapsed)
        return finished


@dataclass(frozen=True)
class Composition:
    """An admitted generation: the prompt as the model reads it, the characters dropped from
    it, the seed, and the text to come, in chunks."""

    prompt: str
    ignored: list[str]
    seed: int
    chunks: AsyncIterator[str]


@dataclass(frozen=True)
class TuneReport:
    abc: str
    title: str | None
    valid: bool
    reason: str | None  # why it is not valid (None when it is)


class MusicModel(ServedModel):
    task = "music"

    def prepare(self) -> None:
        self.vocabulary = CharVocabulary.load(self.model_dir / self.manifest.preprocessing.vocabulary)
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

    def compose(self, prompt: str | None, max_length: int, temperature: float, top_k: int | None,
                seed: int | None, client: str = ANONYMOUS, stop_at_end_of_tune: bool = False) -> "Composition":
        """A request's rules, then its admission: `top_k` at most the vocabulary, a seed drawn
        when none is given, the prompt cleaned (an empty one starts a new tune)."""
        if top_k is not None and top_k > len(self.vocabulary):
            raise InvalidInput("top_k", f"Input should be less than or equal to {len(self.vocabulary)} "
                                        "(the vocabulary size)")
        seed = seed if seed is not None else secrets.randbits(63)
        cleaned, ignored = self.clean_prompt(prompt)
        chunks = self.generate(cleaned, max_length, temperature, top_k, seed, client, stop_at_end_of_tune)
        return Composition(cleaned, ignored, seed, chunks)

    def generate(self, prompt: str, max_length: int, temperature: float, top_k: int | None,
                 seed: int, client: str = ANONYMOUS, stop_at_end_of_tune: bool = False) -> AsyncIterator[str]:
        """Admit the request (or refuse it now: see StepLoop._admit), then yield the generated
        text in chunks (ending early, with `stop_at_end_of_tune`, at the end of the first
        complete tune). The prompt must already be cleaned."""
        self.require_ready()
        return self.generator.submit(prompt, max_length, temperature, top_k, seed, client,
                                     stop_at_end_of_tune=stop_at_end_of_tune)

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
