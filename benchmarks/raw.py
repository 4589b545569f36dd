"""The limit the service is measured against: the same ONNX graphs run in-process, at a
given batch size, with the same pre- and post-processing but no HTTP, queue or event loop."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqserve.manifest import Manifest, newest_version_dir


PROVIDERS = ["CPUExecutionProvider"]  # set to CUDA first by `python -m benchmarks --device cuda`


def _sessions(models_dir: Path, task: str) -> tuple[Path, Manifest, dict[str, ort.InferenceSession]]:
    model_dir = newest_version_dir(models_dir / task)
    manifest = Manifest.load(model_dir)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {name: ort.InferenceSession(str(model_dir / g.file), sess_options=options,
                                           providers=PROVIDERS) for name, g in manifest.graphs.items()}
    return model_dir, manifest, sessions


def _rate(run, items_per_run: int, min_seconds: float = 3.0) -> float:
    run()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        run()
        runs += 1
    return runs * items_per_run / (time.perf_counter() - started)


def sentiment_rate(models_dir: Path, texts: list[str], batch: int) -> float:
    """Reviews per second: tokenize + classifier graph + softmax, `batch` reviews per run."""
    from seqserve.sentiment import decode, load_encoder

    model_dir, manifest, sessions = _sessions(models_dir, "sentiment")
    encoder = load_encoder(model_dir, manifest)
    batches = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    cursor = iter(range(10**9))

    def run():
        ids, lengths = encoder.encode(batches[next(cursor) % len(batches)])
        decode(sessions["classifier"].run(["logits"], {"input_ids": ids, "lengths": lengths})[0])

    return _rate(run, batch)


def translate_rate(models_dir: Path, texts: list[str], batch: int, beam_size: int) -> float:
    """Sentences per second: tokenize + encoder + beam search over the step graph."""
    from seqserve.translation import SubwordCodec, beam_search

    model_dir, manifest, sessions = _sessions(models_dir, "translate")
    codec = SubwordCodec.from_file(model_dir / manifest.preprocessing.tokenizer,
                                   manifest.preprocessing.max_source_tokens)
    batches = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    cursor = iter(range(10**9))

    def run():
        sources = codec.source_ids(batches[next(cursor) % len(batches)])
        for hypothesis in beam_search(sessions["encoder"], sessions["decoder_step"], codec, sources, beam_size):
            codec.decode(hypothesis.ids)

    return _rate(run, batch)


def music_rate(models_dir: Path, batch: int) -> float:
    """Characters per second: sampling + one step-graph run for `batch` streams per step."""
    from seqserve.characters import CharVocabulary
    from seqserve.generation import HostSteps, read_prompt, sample_step

    model_dir, manifest, sessions = _sessions(models_dir, "music")
    vocabulary = CharVocabulary.load(model_dir / manifest.preprocessing.vocabulary)
    state = read_prompt(sessions["prompt"], vocabulary, "X:1\n", batch=batch)
    steps = HostSteps(sessions["step"], state)
    generators = [np.random.default_rng(i) for i in range(batch)]
    return _rate(lambda: sample_step(steps, 1.0, None, generators, vocabulary.decode, state.clocks), batch)
