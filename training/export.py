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


def relabel_output_axes(path: Path, axes: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """Give outputs back the symbolic axis names the exporter's shape annotation lost.

    torch 2.13 traces nn.LSTM's output length from the example input, so the declared shape
    of an output that follows the sequence says e.g. 5 while the graph computes any length.
    Only annotations change here (stale intermediate ones are dropped); the parity checks
    then run the graph at other lengths to prove it."""
    graph = onnx.load(str(path))
    outputs = {v.name: v for v in graph.graph.output}
    for name, dims in axes.items():
        for axis, label in dims.items():
            outputs[name].type.tensor_type.shape.dim[axis].dim_param = label
    del graph.graph.value_info[:]
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
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


def staging_dir(model_dir: Path) -> Path:
    """An empty folder beside the version: the version appears only once everything passed."""
    staging = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def publish(manifest: Manifest, staging: Path, model_dir: Path, evaluate) -> Manifest:
    """Evaluate the staged graphs, write their metrics into the manifest, then move the
    staged folder into place as the version."""
    manifest.save(staging)
    manifest.metrics |= evaluate(staging)
    manifest.save(staging)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    staging.rename(model_dir)
    return manifest


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

    staging = staging_dir(model_dir)
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
    return publish(manifest, staging, model_dir, evaluate_sentiment)


# --- music: a prompt graph and a step graph, each exported in its own process ---------------

MUSIC_GRAPHS = {"prompt": "prompt.onnx", "step": "step.onnx"}
VOCABULARY_FILE = "vocabulary.json"


class CharLSTMStep(torch.nn.Module):
    """One generation step: token [B, 1], state -> logits [B, V], new state."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, h, c = self.model(token, h, c)
        return logits[:, 0, :], h, c


def load_music_model(run_dir: Path):
    from training.models.music import CharLSTM

    checkpoint = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    model = CharLSTM(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def export_music_graph(run_dir: Path, kind: str, path: Path) -> None:
    """Export one of the two music graphs; called in a fresh process by `export_music`."""
    model, _ = load_music_model(run_dir)
    batch, layers, hidden = 2, model.num_layers, model.hidden_size
    h0, c0 = torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden)
    batch_dim = torch.export.Dim("batch", min=1)
    state = {1: batch_dim}
    if kind == "prompt":
        tokens = torch.zeros(batch, 5, dtype=torch.int64)
        export_graph(model, (tokens, h0, c0), path, ["tokens", "h0", "c0"], ["logits", "h", "c"],
                     {"tokens": {0: batch_dim, 1: torch.export.Dim("sequence", min=1)}, "h0": state, "c0": state})
        graph = relabel_output_axes(path, {"logits": {1: "sequence"}})
        check_symbolic_axes(graph, {"tokens": {0: "batch", 1: "sequence"}, "h0": {1: "batch"},
                                    "logits": {0: "batch", 1: "sequence"}, "h": {1: "batch"}})
    else:
        token = torch.zeros(batch, 1, dtype=torch.int64)
        graph = export_graph(CharLSTMStep(model).eval(), (token, h0, c0), path, ["token", "h", "c"],
                             ["logits", "h_next", "c_next"], {"token": {0: batch_dim}, "h": state, "c": state})
        check_symbolic_axes(graph, {"token": {0: "batch"}, "h": {1: "batch"}, "logits": {0: "batch"},
                                    "h_next": {1: "batch"}})


def check_music_parity(model, prompt: ort.InferenceSession, step: ort.InferenceSession, vocab_size: int,
                       steps: int = 200) -> float:
    """ORT vs torch: the prompt graph on a batch of 3 and at batch 1, length 1; then 200 chained
    step-graph runs from the prompt graph's state, each step against torch's. Returns the
    largest difference."""
    rng = np.random.default_rng(0)
    worst = 0.0

    def compare(expected, actual) -> None:
        nonlocal worst
        for e, a in zip(expected, actual):
            worst = max(worst, float(np.abs(e.numpy() - a).max()))

    layers, hidden = model.num_layers, model.hidden_size
    for batch, length in ((3, 37), (1, 1), (2, 120)):
        tokens = rng.integers(0, vocab_size, (batch, length))
        h0 = rng.standard_normal((layers, batch, hidden)).astype(np.float32) * 0.1
        c0 = rng.standard_normal((layers, batch, hidden)).astype(np.float32) * 0.1
        with torch.no_grad():
            expected = model(torch.from_numpy(tokens), torch.from_numpy(h0), torch.from_numpy(c0))
        compare(expected, prompt.run(None, {"tokens": tokens, "h0": h0, "c0": c0}))

    batch = 2
    tokens = rng.integers(0, vocab_size, (batch, 10))
    zeros = np.zeros((layers, batch, hidden), dtype=np.float32)
    _, h, c = prompt.run(None, {"tokens": tokens, "h0": zeros, "c0": zeros})
    with torch.no_grad():
        _, th, tc = model(torch.from_numpy(tokens), torch.from_numpy(zeros), torch.from_numpy(zeros))
        step_model = CharLSTMStep(model)
        for _ in range(steps):
            token = rng.integers(0, vocab_size, (batch, 1))
            expected = step_model(torch.from_numpy(token), th, tc)
            _, th, tc = expected
            actual = step.run(None, {"token": token, "h": h, "c": c})
            _, h, c = actual
            compare(expected, actual)
    if worst > PARITY_ATOL:
        raise AssertionError(f"ONNX Runtime differs from torch by {worst:.2e} (> {PARITY_ATOL})")
    return worst


def export_music(run_dir: Path, model_dir: Path, version: str) -> Manifest:
    import subprocess
    import sys

    from training.data import music as music_data

    model, checkpoint = load_music_model(run_dir)
    config = checkpoint["config"]
    staging = staging_dir(model_dir)
    shutil.copyfile(run_dir / VOCABULARY_FILE, staging / VOCABULARY_FILE)
    for kind, file in MUSIC_GRAPHS.items():
        subprocess.run([sys.executable, "-m", "training.export", "music-graph", kind, str(run_dir),
                        str(staging / file)], check=True)
    sessions = {kind: cpu_session(staging / file) for kind, file in MUSIC_GRAPHS.items()}
    vocab_size = checkpoint["model_args"]["vocab_size"]
    worst = check_music_parity(model, sessions["prompt"], sessions["step"], vocab_size)
    graphs = {}
    for kind, file in MUSIC_GRAPHS.items():
        inputs, outputs = signature(onnx.load(str(staging / file)))
        graphs[kind] = GraphSpec(file=file, inputs=inputs, outputs=outputs)

    meta = json.loads((music_data.data_dir() / "meta.json").read_text())
    lab = meta["sources"]["mit_lab_irish"]
    training_summary = json.loads((run_dir / "training.json").read_text())
    manifest = Manifest(
        name="music", version=version, task="music",
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        description="Character-level LSTM language model over folk tunes in ABC notation.",
        files=file_entries(staging, [*MUSIC_GRAPHS.values(), VOCABULARY_FILE]),
        graphs=graphs, opset=OPSET, torch_version=torch.__version__, onnx_version=onnx.__version__,
        preprocessing={"vocabulary": VOCABULARY_FILE, "tune_separator": "\n\n",
                       "unknown_characters": "NFKC-normalised, then dropped and reported",
                       "state": {"layers": model.num_layers, "hidden_size": model.hidden_size}},
        data=DataSource(package=lab["package"], version=lab["version"], file=lab["member"], sha256=lab["sha256"],
                        license=lab["license"], splits=meta["splits"],
                        extra={"music21_corpus": meta["sources"]["music21_corpus"], "by_source": meta["by_source"],
                               "validity_check_on_test_tunes": meta["validity_check_on_test_tunes"]}),
        hyperparameters={"model": checkpoint["model_args"], "train": config["train"], "profile": config["profile"]},
        training=training_summary,
        metrics={"parity_max_abs_diff": worst},
    )
    from training.evaluate import evaluate_music

    return publish(manifest, staging, model_dir, evaluate_music)


if __name__ == "__main__":
    import sys

    # python -m training.export music-graph <prompt|step> <run_dir> <path>  (one graph per process)
    _, command, kind, run_dir, path = sys.argv
    if command != "music-graph" or kind not in MUSIC_GRAPHS:
        raise SystemExit(f"usage: python -m training.export music-graph {{{'|'.join(MUSIC_GRAPHS)}}} RUN_DIR PATH")
    export_music_graph(Path(run_dir), kind, Path(path))
