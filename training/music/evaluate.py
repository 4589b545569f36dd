"""Music evaluation with the exported ONNX graphs: test cross-entropy, and tunes generated
from fresh seeds checked by the strict check and for copying from the training text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from seqserve.abc import check_tune
from seqserve.bar_clock import BarClock
from seqserve.characters import CharVocabulary
from seqserve.generation import generate_tunes, reads_clock, state_shape
from seqserve.manifest import Manifest
from training.music import data

# Headline metrics a quantized variant must hold (training.quantize): change allowed vs fp32.
# share_valid is a share of 200 sampled tunes (a variant samples other tunes): ±3 points is
# about one standard error of the difference between two such shares near 92% (music/4).
QUALITY = {"test_loss_nats_per_char": ("lower", 0.01), "share_valid": ("higher", 0.03)}


def prompt_loss(prompt_session: ort.InferenceSession, text: str, vocabulary, streams: int = 8,
                    window: int = 500) -> float:
    """Cross-entropy in nats per character of the prompt graph over a cleaned text, state
    carried (with the text's bar clock for a graph that reads it)."""
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


SPAN = 16  # characters: the copy measure's window


def share_seen(tunes: list[str], seen: set[str]) -> float:
    """The share of the tunes' SPAN-character windows that are in `seen`."""
    counts, total = copied_windows(tunes, seen)
    return round(sum(counts.values()) / max(total, 1), 4)


def line_kinds(tune: str) -> list[str]:
    """For each character of a tune, the kind of line it is on: "title" (T:), "headers" (the
    other fields up to and including K:) or "body" (everything after K:)."""
    kinds: list[str] = []
    in_body = False
    for line in tune.splitlines(keepends=True):
        kind = "body" if in_body else "title" if line.startswith("T:") else "headers"
        kinds += [kind] * len(line)
        in_body = in_body or line.startswith("K:")
    return kinds


def copied_windows(tunes: list[str], seen: set[str]) -> tuple[dict[str, int], int]:
    """The tunes' SPAN-character windows found in `seen`, counted by the kind of line each
    starts on (`line_kinds`), and how many windows there are in all."""
    counts, total = dict.fromkeys(("title", "headers", "body"), 0), 0
    for tune in tunes:
        kinds = line_kinds(tune)
        for i in range(len(tune) - SPAN + 1):
            total += 1
            if tune[i : i + SPAN] in seen:
                counts[kinds[i]] += 1
    return counts, total


def copied_by_line(tunes: list[str], seen: set[str]) -> dict[str, float]:
    """`share_seen` split by the kind of line each copied window starts on: each kind's copied
    windows as a share of all windows, so the three add up to `share_seen`. Titles and headers
    are formulaic; a copied body is a recalled phrase of music."""
    counts, total = copied_windows(tunes, seen)
    return {kind: round(count / max(total, 1), 4) for kind, count in counts.items()}


def training_spans(train_tunes: list[dict[str, Any]]) -> set[str]:
    """Every SPAN-character window of the training split's text: what the copy measure looks up."""
    text = data.tunes_text(train_tunes)
    return {text[i : i + SPAN] for i in range(len(text) - SPAN + 1)}


def sampled_figures(sessions: dict[str, ort.InferenceSession], vocabulary: CharVocabulary, seeds: list[int],
                    seen: set[str], max_length: int = 1500) -> dict[str, Any]:
    """One tune per seed at temperature 1.0, as the service samples them: the share valid by
    the strict check, with all headers, their mean length, and the share of their
    16-character spans in `seen` (the training text's)."""
    tunes = generate_tunes(sessions["prompt"], sessions["step"], vocabulary, "X:1\n", seeds=seeds,
                           max_length=max_length, temperature=1.0)
    tunes = ["X:1\n" + t for t in tunes]
    checks = [check_tune(t) for t in tunes]
    return {
        "samples": len(seeds), "seeds": f"{seeds[0]}-{seeds[-1]}", "temperature": 1.0,
        "share_valid": round(sum(c.valid for c in checks) / len(seeds), 4),
        "share_with_all_headers": round(sum(not c.missing_headers for c in checks) / len(seeds), 4),
        "mean_length_chars": round(sum(len(t) for t in tunes) / len(seeds), 1),
        "share_of_16_char_spans_copied_from_training": share_seen(tunes, seen),
        "copied_spans_by_line": copied_by_line(tunes, seen),
    }


def evaluate(model_dir: Path, samples: int = 200, max_length: int = 1500, limit: int = 0,
             precision: str = "fp32") -> dict[str, Any]:
    """Test cross-entropy with the ONNX prompt graph; then `samples` tunes from seeds
    1000 onwards (`sampled_figures`), beside the test split's real tunes' share of spans in the
    training text, the copy measure's reference."""
    manifest = Manifest.load(model_dir)
    sessions = {kind: ort.InferenceSession(str(model_dir / file), providers=["CPUExecutionProvider"])
                for kind, file in manifest.graph_files(precision).items()}
    vocabulary = CharVocabulary.load(model_dir / manifest.preprocessing.vocabulary)
    splits = data.load_splits()
    test = splits["test"][:limit] if limit else splits["test"]
    test_text = vocabulary.clean(data.tunes_text(test))[0]
    seen = training_spans(splits["train"])
    return {
        "test_loss_nats_per_char": round(prompt_loss(sessions["prompt"], test_text, vocabulary), 4),
        "test_tunes": len(test),
        **sampled_figures(sessions, vocabulary, list(range(1000, 1000 + samples)), seen, max_length),
        # The same measure of real tunes the model never saw: folk tunes share phrases and
        # formulaic headers, so this is what tunes from the data's own distribution score unseen.
        "test_tunes_share_of_16_char_spans_in_training": share_seen([t["abc"] for t in test], seen),
        "evaluated_with": f"onnxruntime {ort.__version__} (CPUExecutionProvider, {precision})",
    }
