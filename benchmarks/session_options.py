"""`python -m benchmarks.session_options`: ONNX Runtime session options measured on the
committed graphs, to choose the service's defaults by measurement rather than by habit.

For each graph at the batch sizes the batchers produce, the mean latency of one run under
each combination of intra-op threads, graph optimisation level and CPU memory arena.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from seqserve.manifest import Manifest, newest_version_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC, "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


def feeds(task: str, graph: str, session: ort.InferenceSession, batch: int) -> dict[str, np.ndarray]:
    """Inputs of realistic shape: 60 tokens for a review, 12 for a sentence, state of zeros."""
    rng = np.random.default_rng(0)
    out = {}
    for spec in session.get_inputs():
        shape = [batch if d == "batch" else {"sequence": 60, "source": 12}.get(d, d) for d in spec.shape]
        if spec.type == "tensor(int64)":
            out[spec.name] = (rng.integers(4, 90, shape) if spec.name != "source_lengths" and spec.name != "lengths"
                              else np.full(shape, 60 if task == "sentiment" else 12))
        elif spec.type == "tensor(bool)":
            out[spec.name] = np.ones(shape, dtype=bool)
        else:
            out[spec.name] = rng.standard_normal(shape).astype(np.float32) * 0.1
    return out


def measure(path: Path, task: str, graph: str, batch: int, threads: int, level: str, arena: bool,
            seconds: float = 1.0) -> float:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = LEVELS[level]
    options.enable_cpu_mem_arena = arena
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    inputs = feeds(task, graph, session, batch)
    session.run(None, inputs)
    runs, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        session.run(None, inputs)
        runs += 1
    return (time.perf_counter() - started) / runs * 1000


def main() -> None:
    cases = [("sentiment", "classifier", 1), ("sentiment", "classifier", 32), ("music", "step", 1),
             ("music", "step", 32), ("translate", "encoder", 32), ("translate", "decoder_step", 128)]
    results = []
    for task, graph, batch in cases:
        model_dir = newest_version_dir(REPO_ROOT / "models" / task)
        path = model_dir / Manifest.load(model_dir).graphs[graph].file
        for threads, level, arena in itertools.product((1, 2), LEVELS, (True, False)):
            ms = measure(path, task, graph, batch, threads, level, arena)
            results.append({"task": task, "graph": graph, "batch": batch, "threads": threads, "level": level,
                            "arena": arena, "ms": round(ms, 3)})
        rows = [r for r in results if r["graph"] == graph and r["batch"] == batch and r["task"] == task]
        best = min(rows, key=lambda r: r["ms"])
        default = next(r for r in rows if r["threads"] == 2 and r["level"] == "all" and r["arena"])
        print(f"{task}/{graph} batch {batch}: best {best['ms']:.3f} ms (threads {best['threads']}, {best['level']}, "
              f"arena {best['arena']}); service default {default['ms']:.3f} ms; "
              f"1 thread all arena {next(r for r in rows if r['threads'] == 1 and r['level'] == 'all' and r['arena'])['ms']:.3f} ms",
              flush=True)
    (REPO_ROOT / "benchmarks" / "session_options.json").write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
