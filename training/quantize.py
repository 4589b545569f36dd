"""INT8 variants of a version's graphs: ONNX Runtime's dynamic quantization, then the task's own
evaluation on the test split, and the verdict (served or not) in the manifest.

Dynamic quantization stores the weights of LSTM and MatMul nodes as int8 and quantizes their
activations on the fly, per run; nothing is calibrated, so it needs no data. ONNX Runtime's
LSTM quantizer only takes weights that are initializers, while the exported graphs compute them
(an Unsqueeze of the stored tensor): `quant_pre_process` folds those constants first. Its
output keeps shapes inferred before folding, which the quantizer's own shape inference then
contradicts, so they are dropped (ONNX Runtime infers them again when it loads the graph).

A variant is served only where every headline metric of the task (`QUALITY` in its evaluate
module: the metric, which way is better, the change allowed) stays within its tolerance of
fp32; the manifest records each figure and why the variant is or is not served.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from onnxruntime.quantization.shape_inference import quant_pre_process

from seqserve.manifest import Manifest, PrecisionVariant, file_entries

INT8_METHOD = ("onnxruntime.quantization.quantize_dynamic (weights int8 per tensor, activations quantized per run; "
               "LSTM and MatMul nodes), after quant_pre_process constant folding")

# metric path (dots into the metrics) -> ("higher" or "lower" is better, the change allowed)
Quality = dict[str, tuple[str, float]]


def int8_file(fp32_file: str) -> str:
    stem, dot, suffix = fp32_file.rpartition(".")
    return f"{stem}.int8.{suffix}" if dot else f"{fp32_file}.int8"


def quantize_graph(source: Path, target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        folded = Path(scratch) / "folded.onnx"
        quant_pre_process(str(source), str(folded), skip_symbolic_shape=True)
        graph = onnx.load(str(folded))
        del graph.graph.value_info[:]
        onnx.save(graph, str(folded))
        quantize_dynamic(str(folded), str(target), weight_type=QuantType.QInt8)


def lookup(metrics: dict[str, Any], path: str) -> float | None:
    value: Any = metrics
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return float(value) if isinstance(value, (int, float)) else None


def judge(fp32: dict[str, Any], other: dict[str, Any], quality: Quality) -> tuple[dict[str, Any], bool, str]:
    """Per headline metric: both figures, the change and the tolerance; served if all hold."""
    figures, misses = {}, []
    for path, (better, tolerance) in quality.items():
        base, value = lookup(fp32, path), lookup(other, path)
        if base is None or value is None:
            misses.append(f"{path} not measured")
            continue
        loss = (base - value) if better == "higher" else (value - base)  # > 0: worse than fp32
        figures[path] = {"fp32": base, "this": value, "change": round(value - base, 4), "better": better,
                         "tolerance": tolerance, "within": loss <= tolerance}
        if loss > tolerance:
            misses.append(f"{path} {value:g} vs fp32 {base:g} (allowed {tolerance:g} {'lower' if better == 'higher' else 'higher'})")
    if misses:
        return figures, False, "not served: " + "; ".join(misses)
    return figures, True, "served: every headline metric within its tolerance of fp32 on the test split"


def add_int8(model_dir: Path, evaluate: Callable[..., dict[str, Any]], quality: Quality) -> Manifest:
    """Write `<graph>.int8.onnx` beside each fp32 graph of the version in `model_dir`, evaluate
    them, and record the variant in its manifest (replaced if there was one)."""
    model_dir = Path(model_dir)
    manifest = Manifest.load(model_dir)
    fp32 = manifest.graph_files("fp32")
    graphs = {name: int8_file(file) for name, file in fp32.items()}
    for name, file in graphs.items():
        quantize_graph(model_dir / fp32[name], model_dir / file)
    manifest.files |= file_entries(model_dir, list(graphs.values()))
    manifest.precisions["int8"] = PrecisionVariant(graphs=graphs, method=INT8_METHOD, device="cpu",
                                                   reason="not evaluated yet")
    manifest.save(model_dir)  # evaluate reads the variant's files from the manifest
    metrics = evaluate(model_dir, precision="int8")
    figures, servable, reason = judge(manifest.metrics, metrics, quality)
    manifest.precisions["int8"] = PrecisionVariant(graphs=graphs, method=INT8_METHOD, device="cpu", metrics=metrics,
                                                   quality=figures, servable=servable, reason=reason)
    manifest.save(model_dir)
    return manifest
