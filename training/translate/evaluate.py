"""Translation evaluation with the exported ONNX graphs, exactly as the service translates:
sacreBLEU and chrF on the test split (or, to choose between candidates, the validation
split), greedy and beam 4."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort
import sacrebleu

from seqserve.manifest import Manifest
from seqserve.translation import SubwordCodec, beam_search, describe, prepare_source
from training.translate import data

# Headline metrics a quantized variant must hold (training.quantize): change allowed vs fp32.
QUALITY = {"beam4.bleu_first_reference": ("higher", 0.5), "greedy.bleu_first_reference": ("higher", 0.5)}


def translate_texts(sessions: dict[str, ort.InferenceSession], codec, texts: list[str], beam_size: int,
                    max_length: int = 100, batch_size: int = 64) -> list[str]:
    """Translate with the ONNX graphs exactly as the service does (source preparation, beam
    search, copying numbers and unknown names), sorted by length into batches."""
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


def evaluate(model_dir: Path, limit: int = 0, beam_sizes: tuple[int, ...] = (1, 4),
             precision: str = "fp32", split: str = "test") -> dict[str, Any]:
    """sacreBLEU on the `split` with the first reference (the headline, as published Tatoeba
    scores use) and with every reference, and chrF, for greedy and beam 4, with the graphs of
    `precision`. The split's size is reported under `<split>_sentences`."""
    manifest = Manifest.load(model_dir)
    sessions = {kind: ort.InferenceSession(str(model_dir / file), providers=["CPUExecutionProvider"])
                for kind, file in manifest.graph_files(precision).items()}
    codec = SubwordCodec.from_file(model_dir / manifest.preprocessing.tokenizer,
                                   manifest.preprocessing.max_source_tokens)
    rows = data.load_splits()[split]
    rows = rows[:limit] if limit else rows
    first = [[row["spanish"][0] for row in rows]]
    depth = max(len(row["spanish"]) for row in rows)
    # sacreBLEU takes reference streams; a sentence with fewer references gets None in the rest.
    every = [[row["spanish"][k] if k < len(row["spanish"]) else None for row in rows] for k in range(depth)]
    metrics: dict[str, Any] = {f"{split}_sentences": len(rows),
                               f"{split}_references": sum(len(r["spanish"]) for r in rows)}
    bleu, chrf = sacrebleu.BLEU(), sacrebleu.CHRF()
    for beam_size in beam_sizes:
        name = "greedy" if beam_size == 1 else f"beam{beam_size}"
        hypotheses = translate_texts(sessions, codec, [row["english"] for row in rows], beam_size)
        metrics[name] = {
            "bleu_all_references": round(bleu.corpus_score(hypotheses, every).score, 2),
            "chrf_first_reference": round(chrf.corpus_score(hypotheses, first).score, 2),
            "bleu_first_reference": round(bleu.corpus_score(hypotheses, first).score, 2),
        }
    metrics["signatures"] = {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())}
    metrics["evaluated_with"] = f"onnxruntime {ort.__version__} (CPUExecutionProvider, {precision})"
    return metrics
