"""The limit the service is measured against: the same ONNX graphs run in-process, at a
given batch size, with the same pre- and post-processing but no HTTP, queue or event loop."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqserve.manifest import Manifest, newest_version_dir


# Tokenisation as the service runs it (service/__init__.py): in the calling thread.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROVIDERS = ["CPUExecutionProvider"]  # set to CUDA first by `python -m benchmarks --device cuda`


def _sessions(models_dir: Path, task: str, precision: str = "fp32",
              threads: int = 0) -> tuple[Path, Manifest, dict[str, ort.InferenceSession]]:
    model_dir = newest_version_dir(models_dir / task)
    manifest = Manifest.load(model_dir)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as the service runs them
    if threads:
        options.intra_op_num_threads = threads
    sessions = {name: ort.InferenceSession(str(model_dir / file), sess_options=options, providers=PROVIDERS)
                for name, file in manifest.graph_files(precision).items()}
    return model_dir, manifest, sessions


def _rate(run, items_per_run: int, min_seconds: float = 3.0) -> float:
    for _ in range(3):  # each shape's first run is slower
        run()
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < min_seconds:
        run()
        runs += 1
    return runs * items_per_run / (time.perf_counter() - started)


SENTIMENT_ORDERS = ("arrival", "grouped", "sorted")


def sentiment_batches(texts: list[str], lengths: list[int], batch: int, order: str) -> list[list[list[str]]]:
    """Batches of `batch` reviews, each a list of runs (texts run together): `arrival` pads each
    batch as it comes; `grouped` cuts each batch into runs of similar length (what the service
    does); `sorted` sorts the whole set by length first (the best any batcher could do)."""
    from service.tasks.sentiment import length_groups

    indices = sorted(range(len(texts)), key=lengths.__getitem__) if order == "sorted" else list(range(len(texts)))
    batches = [indices[i : i + batch] for i in range(0, len(indices) - batch + 1, batch)]
    if order == "grouped":
        return [[[texts[b[i]] for i in group] for group in length_groups([lengths[j] for j in b])] for b in batches]
    return [[[texts[i] for i in b]] for b in batches]


def sentiment_rate(models_dir: Path, texts: list[str], batch: int, order: str = "arrival",
                   precision: str = "fp32", threads: int = 0, min_seconds: float = 3.0) -> float:
    """Reviews per second: tokenize + classifier graph + softmax, `batch` reviews per batch,
    formed in `order` (tokenisation is timed too: every run re-tokenizes its texts)."""
    from seqserve.sentiment import decode, load_encoder

    model_dir, manifest, sessions = _sessions(models_dir, "sentiment", precision, threads)
    encoder = load_encoder(model_dir, manifest)
    batches = sentiment_batches(texts, [len(ids) for ids in encoder.token_ids(texts)], batch, order)
    cursor = iter(range(10**9))

    def run():
        for run_texts in batches[next(cursor) % len(batches)]:
            ids, lengths = encoder.pad(encoder.token_ids(run_texts))
            decode(sessions["classifier"].run(["logits"], {"input_ids": ids, "lengths": lengths})[0])

    return _rate(run, batch, min_seconds)


def _sentiment_worker(args, out) -> None:
    out.put(sentiment_rate(*args))


def sentiment_rate_processes(models_dir: Path, texts: list[str], batch: int, order: str, precision: str,
                             processes: int = 2) -> float:
    """Reviews per second of `processes` processes side by side, each one single-thread
    session on its own share of the texts: every core busy, nothing shared."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    out = context.Queue()
    share = len(texts) // processes
    workers = [context.Process(target=_sentiment_worker,
                               args=((models_dir, texts[i * share:(i + 1) * share], batch, order, precision, 1, 5.0), out))
               for i in range(processes)]
    for worker in workers:
        worker.start()
    rates = [out.get(timeout=300) for _ in workers]
    for worker in workers:
        worker.join()
    return sum(rates)


def translate_rate(models_dir: Path, texts: list[str], batch: int, beam_size: int, precision: str = "fp32") -> float:
    """Sentences per second: tokenize + encoder + beam search over the step graph."""
    from seqserve.translation import SubwordCodec, beam_search

    model_dir, manifest, sessions = _sessions(models_dir, "translate", precision)
    codec = SubwordCodec.from_file(model_dir / manifest.preprocessing.tokenizer,
                                   manifest.preprocessing.max_source_tokens)
    batches = [texts[i : i + batch] for i in range(0, len(texts) - batch + 1, batch)]
    cursor = iter(range(10**9))

    def run():
        sources = codec.source_ids(batches[next(cursor) % len(batches)])
        for hypothesis in beam_search(sessions["encoder"], sessions["decoder_step"], codec, sources, beam_size):
            codec.decode(hypothesis.ids)

    return _rate(run, batch)


def music_rate(models_dir: Path, batch: int, precision: str = "fp32", threads: int = 0) -> float:
    """Characters per second: sampling + one step-graph run for `batch` streams per step
    (`threads`: the sessions' intra-op threads; 0: ONNX Runtime's default, one per core)."""
    from seqserve.characters import CharVocabulary
    from seqserve.generation import HostSteps, read_prompt, sample_step

    model_dir, manifest, sessions = _sessions(models_dir, "music", precision, threads)
    vocabulary = CharVocabulary.load(model_dir / manifest.preprocessing.vocabulary)
    state = read_prompt(sessions["prompt"], vocabulary, "X:1\n", batch=batch)
    steps = HostSteps(sessions["step"], state)
    generators = [np.random.default_rng(i) for i in range(batch)]
    return _rate(lambda: sample_step(steps, 1.0, None, generators, vocabulary.decode, state.clocks), batch)
