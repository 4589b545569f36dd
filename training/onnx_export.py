"""What every task's export shares: the dynamo export of one graph and its checks, each graph
in a fresh process, the graphs' signatures, and the manifest's common fields. (Where the
version goes, and how it is put there without ever destroying one, is `training.versions`.)

Every export is checked before it is written as a version: `onnx.checker`, every declared
dynamic axis still symbolic, and ONNX Runtime agreeing with torch at batch 1, length 1 and
on ragged batches (each task's parity checks). Export each model in its own process (the
CLI does, and `export_in_fresh_processes` for tasks with several graphs): exporting several
LSTM models in one process was seen to pin the sequence axis to a constant.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from seqserve.manifest import GraphSpec, Manifest, TensorSpec, file_entries
from training.versions import staged

OPSET = 18
PARITY_ATOL = 1e-4
# An LSTM's cell state is an unbounded sum (music/5's reaches |c| ~ 100, where one float32 step
# is 7.6e-6), so its rounding grows with its size: a state is held to PARITY_ATOL beyond
# PARITY_RTOL of its magnitude, as numpy.allclose measures. Measured on music epochs 8-14
# (docs/selection/music-epochs.md): c differed by up to 1.4e-4 where |c| was 15-100, the
# logits and h stayed within 6.1e-5, the probabilities within 1.6e-6.
PARITY_RTOL = 1e-5


def beyond_tolerance(expected, actual) -> float:
    """max(|actual - expected| - PARITY_RTOL * |expected|): what must stay within PARITY_ATOL
    (numpy.allclose's test) for a state that grows, such as an LSTM's cell state."""
    expected, actual = np.asarray(expected, dtype=np.float64), np.asarray(actual, dtype=np.float64)
    return float((np.abs(actual - expected) - PARITY_RTOL * np.abs(expected)).max())


class ParityCheck:
    """What an export's ORT-vs-torch check has seen so far: the largest absolute difference under
    each label (recorded in the manifest) and the largest `beyond_tolerance` (held to
    PARITY_ATOL by `verify`). One tracker for every task's check, so they judge alike."""

    def __init__(self, *labels: str) -> None:
        self.worst = dict.fromkeys(labels, 0.0)
        self.beyond = 0.0

    def compare(self, expected, actual, label: str) -> None:
        """`expected` and `actual`: matching sequences of outputs (torch tensors or arrays)."""
        for e, a in zip(expected, actual, strict=True):
            e, a = np.asarray(e), np.asarray(a)
            self.worst[label] = max(self.worst.get(label, 0.0), float(np.abs(e - a).max()))
            self.beyond = max(self.beyond, beyond_tolerance(e, a))

    def verify(self) -> None:
        if self.beyond > PARITY_ATOL:
            raise AssertionError(f"ONNX Runtime differs from torch: {self.worst}, {self.beyond:.2e} beyond "
                                 f"{PARITY_RTOL} of the values (limit {PARITY_ATOL})")


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


def graph_specs(graphs: dict[str, str], staging: Path) -> dict[str, GraphSpec]:
    """Each staged graph's file and signature, by kind."""
    specs = {}
    for kind, file in graphs.items():
        inputs, outputs = signature(onnx.load(str(staging / file)))
        specs[kind] = GraphSpec(file=file, inputs=inputs, outputs=outputs)
    return specs


def cpu_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def export_in_fresh_processes(task: str, graphs: dict[str, str], run_dir: Path, staging: Path,
                              ensemble_with: list[Path] = ()) -> dict[str, ort.InferenceSession]:
    """`python -m training export-graph <task> <graph> <run_dir> <path>` once per graph (see
    the module's note), then a CPU session on each."""
    members = [arg for path in ensemble_with for arg in ("--ensemble-with", str(path))]
    for kind, file in graphs.items():
        subprocess.run([sys.executable, "-m", "training", "export-graph", task, kind, str(run_dir),
                        str(staging / file), *members], check=True)
    return {kind: cpu_session(staging / file) for kind, file in graphs.items()}


@contextmanager
def staged_from_run(task: str, run_dir: Path, model_dir: Path, files: list[str], force: bool = False,
                    graphs: dict[str, str] | None = None, ensemble_with: list[Path] = ()
                    ) -> Iterator[tuple[Path, dict[str, ort.InferenceSession]]]:
    """`versions.staged` with these files of the run (tokenizer, vocabulary) copied in and
    `graphs` (kind -> file) exported there, each in a fresh process (of the run, or of its
    ensemble with `ensemble_with`); yields the staging folder and a CPU session on each graph."""
    with staged(model_dir, force) as staging:
        for file in files:
            shutil.copyfile(Path(run_dir) / file, staging / file)
        yield staging, export_in_fresh_processes(task, graphs, run_dir, staging, ensemble_with) if graphs else {}


def check_one_tokenizer(run_dirs: list[Path], file: str) -> None:
    """An ensemble's members must read text alike: refuse runs whose tokenizer files differ."""
    if len({(Path(path) / file).read_bytes() for path in run_dirs}) > 1:
        raise SystemExit("an ensemble's members must share one tokenizer: "
                         + ", ".join(str(Path(path) / file) for path in run_dirs) + " differ")


def trained_as(checkpoints: list[dict[str, Any]], summaries: list[dict[str, Any]], averaged: str) -> dict[str, Any]:
    """A manifest's `hyperparameters` and `training` for one run (its checkpoint and
    training.json), or for an ensemble of runs, whose outputs are averaged as `averaged`."""
    def settings(checkpoint: dict[str, Any]) -> dict[str, Any]:  # a config as saved: a plain dict
        config = checkpoint["config"]
        pretrain = config.get("pretrain", {})
        return {"model": checkpoint["model_args"], "train": config["train"], "tokenizer": config["tokenizer"],
                "profile": config["profile"], **({"pretrain": pretrain} if pretrain.get("epochs") else {})}

    if len(checkpoints) == 1:
        return {"hyperparameters": settings(checkpoints[0]), "training": summaries[0]}
    # every member's training, language-model pretraining included
    seconds = sum(s["seconds"] + (s.get("language_model_pretraining") or {}).get("seconds", 0) for s in summaries)
    return {"hyperparameters": {"ensemble": averaged, "members": [settings(c) for c in checkpoints]},
            "training": {"hardware": summaries[0]["hardware"], "members": summaries, "seconds": round(seconds, 1)}}


def manifest(task: str, version: str, staging: Path, files: list[str], **fields: Any) -> Manifest:
    """A version's manifest with the fields every task's share filled in (the files' sizes
    and hashes as staged, the export's opset and library versions, the time)."""
    return Manifest(name=task, version=version, task=task,
                    created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                    files=file_entries(staging, files), opset=OPSET, torch_version=torch.__version__,
                    onnx_version=onnx.__version__, **fields)
