"""Export step: best checkpoint -> ONNX graph + tokenizer + manifest under models/<task>/<version>/.

Every export is checked before it is written as a version: `onnx.checker`, every declared
dynamic axis still symbolic, and ONNX Runtime agreeing with torch at batch 1, length 1 and
on ragged batches. Export each model in its own process (the CLI does): exporting several
LSTM models in one process was seen to pin the sequence axis to a constant.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from seqserve.manifest import DataSource, GraphSpec, Manifest, TensorSpec, file_entries
from seqserve.sentiment import LABELS
from seqserve.tokenization import TextEncoder, TruncationPolicy
from training.data import sentiment as sentiment_data
from training.models.sentiment import SentimentLSTM

OPSET = 18
PARITY_ATOL = 1e-4
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def export_graph(model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path,
                 input_names: list[str], output_names: list[str], dynamic_shapes: dict[str, Any]) -> onnx.ModelProto:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, example, str(path), dynamo=True, external_data=False, opset_version=OPSET,
                      input_names=input_names, output_names=output_names, dynamic_shapes=dynamic_shapes)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    return graph


def check_symbolic_axes(graph: onnx.ModelProto, expected: dict[str, dict[int, str]]) -> None:
    """Fail if any axis we declared dynamic came out as a fixed number."""
    values = {v.name: v for v in list(graph.graph.input) + list(graph.graph.output)}
    for name, axes in expected.items():
        dims = values[name].type.tensor_type.shape.dim
        for axis, label in axes.items():
            if not dims[axis].dim_param:
                raise AssertionError(f"{name} axis {axis} ({label}) was fixed to {dims[axis].dim_value} at export")


def signature(graph: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        return TensorSpec(name=value.name, dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, shape=shape)

    return [spec(v) for v in graph.graph.input], [spec(v) for v in graph.graph.output]


def cpu_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_sentiment_parity(model: SentimentLSTM, session: ort.InferenceSession, encoder: TextEncoder,
                           texts: list[str]) -> float:
    """ORT vs torch on: each text alone (batch 1), a one-token input (length 1), and all texts
    as one ragged batch, also against each text run alone. Returns the largest difference."""
    def run_torch(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()

    def run_ort(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]

    worst = 0.0
    alone = []
    for text in texts + ["Great"]:
        ids, lengths = encoder.encode([text])
        expected = run_torch(ids, lengths)
        worst = max(worst, float(np.abs(run_ort(ids, lengths) - expected).max()))
        alone.append(expected[0])
    one_step = np.array([[encoder.unk_id]], dtype=np.int64), np.array([1], dtype=np.int64)
    worst = max(worst, float(np.abs(run_ort(*one_step) - run_torch(*one_step)).max()))
    ids, lengths = encoder.encode(texts)
    assert len(set(lengths.tolist())) > 1, "the ragged check needs texts of different lengths"
    ragged = run_ort(ids, lengths)
    worst = max(worst, float(np.abs(ragged - run_torch(ids, lengths)).max()))
    worst = max(worst, float(np.abs(ragged - np.stack(alone[: len(texts)])).max()))
    if worst > PARITY_ATOL:
        raise AssertionError(f"ONNX Runtime differs from torch by {worst:.2e} (> {PARITY_ATOL})")
    return worst


def export_sentiment(run_dir: Path, model_dir: Path, version: str) -> Manifest:
    from training.evaluate import evaluate_sentiment

    checkpoint = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    config = checkpoint["config"]
    training_summary = json.loads((run_dir / "training.json").read_text())
    model = SentimentLSTM(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    model.eval()

    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(run_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
    truncation = TruncationPolicy(config["tokenizer"]["max_tokens"], config["tokenizer"]["head_tokens"])
    encoder = TextEncoder.from_file(staging / TOKENIZER_FILE, truncation)

    # The example's batch and length must differ from 1 so the exporter cannot specialise them.
    example = tuple(torch.from_numpy(a) for a in encoder.encode(["a fine film", "not good at all , sadly"]))
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "lengths": {0: "batch"}, "logits": {0: "batch"}}
    batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
    graph = export_graph(model, example, staging / GRAPH_FILE, ["input_ids", "lengths"], ["logits"],
                         {"input_ids": {0: batch, 1: sequence}, "lengths": {0: batch}})
    check_symbolic_axes(graph, dynamic)
    parity_texts = [row["text"] for row in sentiment_data.load_splits()["validation"][:6]] + ["Loved it!"]
    worst = check_sentiment_parity(model, cpu_session(staging / GRAPH_FILE), encoder, parity_texts)
    inputs, outputs = signature(graph)

    meta = sentiment_data.load_meta()
    manifest = Manifest(
        name="sentiment",
        version=version,
        task="sentiment",
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        description="Binary sentiment of English movie reviews: embedding -> bidirectional LSTM -> "
                    "mean and max pooling over valid positions -> linear.",
        files=file_entries(staging, [GRAPH_FILE, TOKENIZER_FILE]),
        graphs={"classifier": GraphSpec(file=GRAPH_FILE, inputs=inputs, outputs=outputs)},
        opset=OPSET,
        torch_version=torch.__version__,
        onnx_version=onnx.__version__,
        preprocessing={
            "tokenizer": TOKENIZER_FILE,
            "max_tokens": truncation.max_tokens,
            "head_tokens": truncation.head_tokens,
            "labels": list(LABELS),
        },
        data=DataSource(
            package=meta["package"], version=meta["version"], file=meta["file"], sha256=meta["sha256"],
            license=meta["license"], splits=meta["splits"],
            extra={k: meta[k] for k in ("seed", "by_source", "duplicates_removed", "embeddings") if k in meta},
        ),
        hyperparameters={"model": checkpoint["model_args"], "train": config["train"], "tokenizer": config["tokenizer"],
                         "profile": config["profile"]},
        training=training_summary,
        metrics={"parity_max_abs_diff": worst},
    )
    manifest.save(staging)
    manifest.metrics |= evaluate_sentiment(staging)
    manifest.save(staging)

    if model_dir.exists():
        shutil.rmtree(model_dir)
    staging.rename(model_dir)
    return manifest
