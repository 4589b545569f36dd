"""Sentiment export: the best checkpoint (or several runs' best, averaged as one ensemble
graph) -> model.onnx + tokenizer.json + manifest, checked against torch, as a new version
(`training.versions`). One graph, exported in this process (the CLI's own)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from seqserve.manifest import DataSource, GraphSpec, Manifest
from seqserve.sentiment import LABELS
from seqserve.tokenization import TextEncoder, TruncationPolicy
from training.checkpoints import load_best
from training.onnx_export import (ParityCheck, check_one_tokenizer, check_symbolic_axes, cpu_session, export_graph,
                                  manifest, signature, staged_from_run, trained_as)
from training.sentiment import data
from training.sentiment.evaluate import QUALITY, evaluate
from training.sentiment.model import SentimentEnsemble, SentimentLSTM
from training.versions import publish

GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def check_parity(model: SentimentLSTM, session: ort.InferenceSession, encoder: TextEncoder, texts: list[str]) -> float:
    """ORT vs torch on: each text alone (batch 1), a one-token input (length 1), and all texts
    as one ragged batch, also against each text run alone; held to PARITY_ATOL beyond PARITY_RTOL
    of the logits' size like every task's check (`ParityCheck`). Returns the largest difference."""
    def run_torch(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()

    def run_ort(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]

    parity = ParityCheck("max_abs_diff")
    alone = []
    for text in texts + ["Great"]:
        ids, lengths = encoder.encode([text])
        expected = run_torch(ids, lengths)
        parity.compare([expected], [run_ort(ids, lengths)], "max_abs_diff")
        alone.append(expected[0])
    one_step = np.array([[encoder.unk_id]], dtype=np.int64), np.array([1], dtype=np.int64)
    parity.compare([run_torch(*one_step)], [run_ort(*one_step)], "max_abs_diff")
    ids, lengths = encoder.encode(texts)
    assert len(set(lengths.tolist())) > 1, "the ragged check needs texts of different lengths"
    ragged = run_ort(ids, lengths)
    parity.compare([run_torch(ids, lengths), np.stack(alone[: len(texts)])], [ragged, ragged], "max_abs_diff")
    parity.verify()
    return parity.worst["max_abs_diff"]


def export(run_dir: Path, model_dir: Path, version: str, force: bool = False,
           ensemble_with: list[Path] = ()) -> Manifest:
    """Export the run's best checkpoint; with `ensemble_with`, one graph that averages it with
    those runs' best checkpoints (which must share its tokenizer)."""
    run_dirs = [run_dir, *ensemble_with]
    members = [load_best(path, SentimentLSTM) for path in run_dirs]
    check_one_tokenizer(run_dirs, TOKENIZER_FILE)
    model = members[0][0] if len(members) == 1 else SentimentEnsemble([m for m, _ in members]).eval()
    checkpoint = members[0][1]
    config = checkpoint["config"]
    summaries = [json.loads((path / "training.json").read_text()) for path in run_dirs]

    with staged_from_run("sentiment", run_dir, model_dir, [TOKENIZER_FILE], force) as (staging, _):
        truncation = TruncationPolicy(config["tokenizer"]["max_tokens"], config["tokenizer"]["head_tokens"])
        encoder = TextEncoder.from_file(staging / TOKENIZER_FILE, truncation)

        # The example's batch and length must differ from 1 so the exporter cannot specialise them.
        example = tuple(torch.from_numpy(a) for a in encoder.encode(["a fine film", "not good at all , sadly"]))
        dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "lengths": {0: "batch"}, "logits": {0: "batch"}}
        batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
        graph = export_graph(model, example, staging / GRAPH_FILE, ["input_ids", "lengths"], ["logits"],
                             {"input_ids": {0: batch, 1: sequence}, "lengths": {0: batch}})
        check_symbolic_axes(graph, dynamic)
        parity_texts = [row["text"] for row in data.load_splits()["validation"][:6]] + ["Loved it!"]
        worst = check_parity(model, cpu_session(staging / GRAPH_FILE), encoder, parity_texts)
        inputs, outputs = signature(graph)

        meta = data.load_meta()
        written = manifest(
            "sentiment", version, staging, [GRAPH_FILE, TOKENIZER_FILE],
            description=(f"Binary sentiment of English reviews ({trained_on(members)}): embedding -> "
                         "bidirectional LSTM -> pooling over valid positions -> linear"
                         + (f"; {len(members)} such classifiers, their probabilities averaged."
                            if len(members) > 1 else ".")),
            graphs={"classifier": GraphSpec(file=GRAPH_FILE, inputs=inputs, outputs=outputs)},
            preprocessing={
                "tokenizer": TOKENIZER_FILE,
                "max_tokens": truncation.max_tokens,
                "head_tokens": truncation.head_tokens,
                "labels": list(LABELS),
            },
            data=DataSource(
                package=meta["package"], version=meta["version"], file=meta["file"], sha256=meta["sha256"],
                license=meta["license"], splits=meta["splits"],
                extra={k: meta[k] for k in ("seed", "by_source", "duplicates_removed", "embeddings", "domains")
                       if k in meta},
            ),
            **trained_as([c for _, c in members], summaries, "mean of the members' probabilities"),
            metrics={"parity_max_abs_diff": worst},
        )
        return publish(written, staging, model_dir, evaluate, force, quality=QUALITY)


def trained_on(members: list[tuple[SentimentLSTM, dict[str, Any]]]) -> str:
    """What the members were trained on, for the description: movie reviews (with the
    validation split too where a member is a refit), and each other domain (train.domains)
    with how many members saw it."""
    refits = sum(bool(checkpoint["config"]["train"].get("refit")) for _, checkpoint in members)
    splits = ("" if not refits else " (training and validation splits)" if refits == len(members)
              else f" (training and validation splits for {refits} of {len(members)} members)")
    said = ["trained on movie reviews" + splits]
    for name in sorted({n for _, checkpoint in members for n in checkpoint["config"]["train"].get("domains", [])}):
        seen = sum(name in checkpoint["config"]["train"].get("domains", []) for _, checkpoint in members)
        said.append(f"{name} reviews" + (f" for {seen} of {len(members)} members" if len(members) > 1 else ""))
    return ", and ".join(said)
