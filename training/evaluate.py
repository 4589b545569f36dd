"""Evaluate step: run the exported ONNX graph (not the torch checkpoint) on the test split."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import onnxruntime as ort

from seqserve.manifest import Manifest, newest_version_dir
from seqserve.sentiment import LABELS, decode, load_encoder
from training.data import sentiment as sentiment_data

# Reviews written for this project in the voices of app users, bloggers and forum posts:
# text from neither training source, to check that the model holds up outside the corpus.
OTHER_SOURCES_FILE = Path(__file__).parent / "data" / "sentiment_other_sources.jsonl"


def newest_model_dir(task_dir: Path) -> Path:
    found = newest_version_dir(task_dir)
    if found is None:
        raise SystemExit(f"no exported model under {task_dir}: run `python -m training export` first")
    return found


def predict_labels(session: ort.InferenceSession, encoder, texts: list[str], batch_size: int = 128) -> list[int]:
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    labels = [0] * len(texts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, lengths = encoder.encode([texts[i] for i in batch])
        logits = session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]
        for i, prediction in zip(batch, decode(logits)):
            labels[i] = LABELS.index(prediction.label)
    return labels


def accuracy(rows: list[dict[str, Any]], predicted: list[int]) -> dict[str, float | int]:
    hits = sum(int(p == row["label"]) for p, row in zip(predicted, rows))
    return {"accuracy": round(hits / len(rows), 4), "examples": len(rows)}


def evaluate_sentiment(model_dir: Path, limit: int = 0) -> dict[str, Any]:
    """Accuracy per source on the test split (the first `limit` of each source if set), and on
    the out-of-corpus reviews."""
    manifest = Manifest.load(model_dir)
    session = ort.InferenceSession(str(model_dir / manifest.graphs["classifier"].file),
                                   providers=["CPUExecutionProvider"])
    encoder = load_encoder(model_dir, manifest)

    by_source: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in sentiment_data.load_splits()["test"]:
        if not limit or len(by_source[row["source"]]) < limit:
            by_source[row["source"]].append(row)
    other = [json.loads(line) for line in OTHER_SOURCES_FILE.read_text().splitlines() if line.strip()]

    metrics: dict[str, Any] = {"split": "test" + (f" (first {limit} per source)" if limit else "")}
    everything = []
    for source, rows in sorted(by_source.items()):
        predicted = predict_labels(session, encoder, [r["text"] for r in rows])
        metrics[f"test_{source}"] = accuracy(rows, predicted)
        everything += list(zip(rows, predicted))
    metrics["test_all"] = accuracy([r for r, _ in everything], [p for _, p in everything])
    metrics["other_sources"] = accuracy(other, predict_labels(session, encoder, [r["text"] for r in other]))
    metrics["evaluated_with"] = f"onnxruntime {ort.__version__} ({session.get_providers()[0]})"
    return metrics


def music_test_loss(prompt_session: ort.InferenceSession, text: str, vocabulary, streams: int = 8,
                    window: int = 500) -> float:
    """Cross-entropy in nats per character of the prompt graph over a cleaned text, state
    carried (with the text's bar clock for a graph that reads it)."""
    import numpy as np

    from seqserve.bar_clock import BarClock
    from seqserve.generation import reads_clock, state_shape

    ids = vocabulary.encode(text)
    length = len(ids) // streams
    data = ids[: length * streams].reshape(streams, length)
    clocks = BarClock().read_text(text)[: length * streams].reshape(streams, length) if reads_clock(prompt_session) else None
    layers, hidden = state_shape(prompt_session)
    h = c = np.zeros((layers, streams, hidden), dtype=np.float32)
    total, count = 0.0, 0
    for start in range(0, length - 1, window):
        targets = data[:, start + 1 : start + window + 1]
        window_slice = slice(start, start + targets.shape[1])
        feeds = {"tokens": data[:, window_slice], "h0": h, "c0": c}
        if clocks is not None:
            feeds["clocks"] = clocks[:, window_slice]
        logits, h, c = prompt_session.run(None, feeds)
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        total -= np.take_along_axis(log_probs, targets[..., None], axis=-1).sum()
        count += targets.size
    return float(total / count)


def evaluate_music(model_dir: Path, samples: int = 200, max_length: int = 1500, limit: int = 0) -> dict[str, Any]:
    """Test cross-entropy with the ONNX prompt graph; then `samples` tunes from fresh seeds at
    temperature 1.0: share valid (the strict check), share with all headers, mean length, and
    the share of generated 16-character spans found verbatim in the training text."""
    from seqserve.abc import check_tune
    from seqserve.characters import CharVocabulary
    from seqserve.generation import generate_tunes
    from training.data import music as music_data

    manifest = Manifest.load(model_dir)
    sessions = {kind: ort.InferenceSession(str(model_dir / g.file), providers=["CPUExecutionProvider"])
                for kind, g in manifest.graphs.items()}
    vocabulary = CharVocabulary.load(model_dir / manifest.preprocessing["vocabulary"])
    splits = music_data.load_splits()
    test = splits["test"][:limit] if limit else splits["test"]
    test_text = vocabulary.clean(music_data.tunes_text(test))[0]
    metrics: dict[str, Any] = {"test_loss_nats_per_char": round(music_test_loss(sessions["prompt"], test_text, vocabulary), 4),
                               "test_tunes": len(test)}

    tunes = generate_tunes(sessions["prompt"], sessions["step"], vocabulary, "X:1\n", seeds=list(range(1000, 1000 + samples)),
                           max_length=max_length, temperature=1.0)
    tunes = ["X:1\n" + t for t in tunes]
    checks = [check_tune(t) for t in tunes]
    span = 16
    training_text = music_data.tunes_text(splits["train"])
    seen = {training_text[i : i + span] for i in range(len(training_text) - span + 1)}
    spans = [t[i : i + span] for t in tunes for i in range(len(t) - span + 1)]
    metrics |= {
        "samples": samples, "temperature": 1.0,
        "share_valid": round(sum(c.valid for c in checks) / samples, 4),
        "share_with_all_headers": round(sum(not c.missing_headers for c in checks) / samples, 4),
        "mean_length_chars": round(sum(len(t) for t in tunes) / samples, 1),
        "share_of_16_char_spans_copied_from_training": round(sum(s in seen for s in spans) / max(len(spans), 1), 4),
        "evaluated_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
    }
    return metrics


def translate_texts(sessions: dict[str, ort.InferenceSession], codec, texts: list[str], beam_size: int,
                    max_length: int = 100, batch_size: int = 64) -> list[str]:
    """Translate with the ONNX graphs exactly as the service does (source preparation, beam
    search, copying numbers and unknown names), sorted by length into batches."""
    from seqserve.translation import beam_search, describe, prepare_source

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    outputs = [""] * len(texts)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        sources = [prepare_source(codec, texts[i]) for i in batch]
        hypotheses = beam_search(sessions["encoder"], sessions["decoder_step"], codec, [s.ids for s in sources],
                                 beam_size=beam_size, max_length=max_length)
        for i, source, hypothesis in zip(batch, sources, hypotheses):
            outputs[i] = describe(codec, source, hypothesis).translation
    return outputs


def evaluate_translate(model_dir: Path, limit: int = 0, beam_sizes: tuple[int, ...] = (1, 4)) -> dict[str, Any]:
    """sacreBLEU on the test split with the first reference (the headline, as published
    Tatoeba scores use) and with every reference, and chrF, for greedy and beam 4."""
    import sacrebleu

    from seqserve.translation import SubwordCodec
    from training.data import translate as translate_data

    manifest = Manifest.load(model_dir)
    sessions = {kind: ort.InferenceSession(str(model_dir / g.file), providers=["CPUExecutionProvider"])
                for kind, g in manifest.graphs.items()}
    codec = SubwordCodec.from_file(model_dir / manifest.preprocessing["tokenizer"],
                                   manifest.preprocessing["max_source_tokens"])
    test = translate_data.load_splits()["test"]
    test = test[:limit] if limit else test
    first = [[row["spanish"][0] for row in test]]
    depth = max(len(row["spanish"]) for row in test)
    # sacreBLEU takes reference streams; a sentence with fewer references gets None in the rest.
    every = [[row["spanish"][k] if k < len(row["spanish"]) else None for row in test] for k in range(depth)]
    metrics: dict[str, Any] = {"test_sentences": len(test), "test_references": sum(len(r["spanish"]) for r in test)}
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    for beam_size in beam_sizes:
        name = "greedy" if beam_size == 1 else f"beam{beam_size}"
        hypotheses = translate_texts(sessions, codec, [row["english"] for row in test], beam_size)
        metrics[name] = {
            "bleu_all_references": round(bleu.corpus_score(hypotheses, every).score, 2),
            "chrf_first_reference": round(chrf.corpus_score(hypotheses, first).score, 2),
            "bleu_first_reference": round(bleu.corpus_score(hypotheses, first).score, 2),
        }
    metrics["signatures"] = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    metrics["evaluated_with"] = f"onnxruntime {ort.__version__} (CPUExecutionProvider)"
    return metrics
