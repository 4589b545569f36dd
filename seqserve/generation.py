"""Sampling characters from the music model's ONNX graphs (numpy only).

Each sequence has its own random generator, seeded per request, so a sequence's output
depends on its seed and settings alone, never on what else runs in the same batch.

A model whose graphs read the bar clock (an input `clocks` [B, T] of the prompt graph and
`clock` [B, 1] of the step graph) gets it computed here from the text, with one
`BarClock` per sequence that reads the prompt and then every sampled character.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from seqserve.abc import TUNE_SEPARATOR
from seqserve.bar_clock import BarClock
from seqserve.characters import CharVocabulary


def sample_ids(logits: np.ndarray, temperature: float | np.ndarray, top_k: int | None | list[int | None],
               generators: list[np.random.Generator]) -> np.ndarray:
    """logits [B, V] -> one id per row, from softmax(logits / temperature) over the top_k.

    `temperature` and `top_k` are one value for all rows or one per row (continuous batching
    mixes requests with different settings); each row's result depends on its own row only."""
    rows, vocab = logits.shape
    temperature = np.broadcast_to(np.asarray(temperature, dtype=np.float64), (rows,))
    # Subtract each row's maximum before dividing: a tiny temperature then sends the others to
    # -inf (sampling becomes argmax) instead of overflowing to inf - inf.
    scaled = logits.astype(np.float64)
    with np.errstate(over="ignore"):  # that overflow to -inf is the intended argmax
        scaled = (scaled - scaled.max(axis=-1, keepdims=True)) / temperature[:, None]
    if top_k is not None:  # (the common case, no row limited, costs nothing per step)
        ks = top_k if isinstance(top_k, list) else [top_k] * rows
        ks = np.array([vocab if k is None else min(k, vocab) for k in ks])
        if (ks < vocab).any():
            kth = -np.sort(-scaled, axis=-1)[np.arange(rows), ks - 1][:, None]  # each row's k-th largest
            scaled = np.where(scaled < kth, -np.inf, scaled)
    probabilities = np.exp(scaled)
    probabilities /= probabilities.sum(axis=-1, keepdims=True)
    draws = np.array([g.random() for g in generators])[:, None]
    ids = (probabilities.cumsum(axis=-1) < draws).sum(axis=-1)
    return np.minimum(ids, vocab - 1)


@dataclass
class GenerationState:
    """Where a batch of sequences stands: the distribution of each one's next character and
    the LSTM state after everything read or written so far."""

    logits: np.ndarray  # [B, V]
    h: np.ndarray  # [layers, B, hidden]
    c: np.ndarray
    clocks: list[BarClock] | None = None  # one per sequence, for graphs that read the clock


def reads_clock(session) -> bool:
    """Whether a music graph takes the bar clock as an input (music/3 and older do not)."""
    return any(i.name in ("clocks", "clock") for i in session.get_inputs())


def next_clock_ids(clocks: Sequence[BarClock], characters: Sequence[str]) -> np.ndarray:
    """Each sequence's clock after its newly written character: the step graph's `clock` [B, 1]."""
    return np.array([[clock.read(ch)] for clock, ch in zip(clocks, characters)], dtype=np.int64)


def state_shape(prompt_session) -> tuple[int, int]:
    """(layers, hidden size) of the recurrent state, read from the prompt graph's signature."""
    shape = next(i.shape for i in prompt_session.get_inputs() if i.name == "h0")
    return int(shape[0]), int(shape[2])


def read_prompt(prompt_session, vocabulary: CharVocabulary, prompt: str, batch: int = 1,
                after: GenerationState | None = None) -> GenerationState:
    """Run the prompt graph once over a cleaned prompt, for `batch` copies of it. With `after`
    (the state `batch` copies of the prompt's beginning left), `prompt` is the next piece of a
    prompt read in pieces: the result is the same as reading the whole at once."""
    layers, hidden = state_shape(prompt_session)
    tokens = np.repeat(vocabulary.encode(prompt)[None, :], batch, axis=0)
    if after is None:
        h0 = c0 = np.zeros((layers, batch, hidden), dtype=np.float32)
    else:
        h0, c0 = after.h, after.c
    feeds, clocks = {"tokens": tokens, "h0": h0, "c0": c0}, None
    if reads_clock(prompt_session):
        clock = BarClock() if after is None else copy.deepcopy(after.clocks[0])
        feeds["clocks"] = np.repeat(clock.read_text(prompt)[None, :], batch, axis=0)
        clocks = [copy.deepcopy(clock) for _ in range(batch)]
    logits, h, c = prompt_session.run(None, feeds)
    return GenerationState(logits[:, -1, :], h, c, clocks)


class Steps(Protocol):
    """Rows of generation state that a step graph advances: `logits` [rows, V] on the host,
    `step(ids [rows, 1], clock [rows, 1] or None)` runs the graph once. `HostSteps` keeps the
    state in numpy arrays; the service's `StepState` keeps it on the session's device."""

    logits: np.ndarray

    def step(self, ids: np.ndarray, clock: np.ndarray | None) -> None: ...


class HostSteps:
    """A GenerationState advanced by plain runs of the step graph (arrays on the host)."""

    def __init__(self, step_session, state: GenerationState):
        self.session, self.state = step_session, state

    @property
    def logits(self) -> np.ndarray:
        return self.state.logits

    def step(self, ids: np.ndarray, clock: np.ndarray | None) -> None:
        feeds = {"token": ids, "h": self.state.h, "c": self.state.c} | ({"clock": clock} if clock is not None else {})
        self.state.logits, self.state.h, self.state.c = self.session.run(None, feeds)


def sample_step(state: Steps, temperature: float | np.ndarray, top_k: int | None | list[int | None],
                generators: list[np.random.Generator], decode: Callable[[np.ndarray], str],
                clocks: Sequence[BarClock] | None) -> str:
    """One step of generation for every row — the one step the service, `evaluate` and the
    benchmarks all run: sample each row's next character, read it into the row's bar clock
    (for a graph that reads one), advance the state by one step-graph run. Returns the
    characters, one per row."""
    ids = sample_ids(state.logits, temperature, top_k, generators)
    characters = decode(ids)
    clock = next_clock_ids(clocks, characters) if clocks is not None else None
    state.step(ids[:, None].astype(np.int64), clock)
    return characters


def generate_tunes(prompt_session, step_session, vocabulary: CharVocabulary, prompt: str, seeds: list[int],
                   max_length: int, temperature: float = 1.0, top_k: int | None = None) -> list[str]:
    """Continue one cleaned prompt once per seed, in one batch, each until its tune ends (the
    blank line) or `max_length` characters; returns the text written after the prompt."""
    state = read_prompt(prompt_session, vocabulary, prompt, batch=len(seeds))
    steps = HostSteps(step_session, state)
    generators = [np.random.default_rng(seed) for seed in seeds]
    outputs = ["" for _ in seeds]
    active = np.ones(len(seeds), dtype=bool)
    for _ in range(max_length):
        characters = sample_step(steps, temperature, top_k, generators, vocabulary.decode, state.clocks)
        for row in np.flatnonzero(active):
            outputs[row] += characters[row]
            active[row] = not outputs[row].endswith(TUNE_SEPARATOR)
        if not active.any():
            break
    return [text.split(TUNE_SEPARATOR)[0] for text in outputs]
