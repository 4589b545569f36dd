"""`python -m benchmarks.tuning`: choose each task's batching settings by measurement.

For every setting in a small grid it starts a `python -m service` process serving only that
task (SEQSERVE_<TASK>_* from the grid), loads it at two concurrencies with inputs from the
test split, and records requests/s, p50/p99 latency and the mean batch size. The defaults in
`service/config.py` are the settings picked here: the best throughput at the higher
concurrency among those whose p99 there is at most twice their p50, so that a setting does
not buy throughput with tail latency.

    python -m benchmarks.tuning                       # all tasks, 10 s per level
    python -m benchmarks.tuning --tasks sentiment --duration 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import tempfile
from pathlib import Path

from benchmarks.__main__ import inputs, machine
from benchmarks.load import run_load
from benchmarks.server import REPO_ROOT, ServiceProcess

GRIDS = {
    "sentiment": {"max_batch_size": [16, 32, 64], "max_wait_ms": [2, 5, 10]},
    "translate": {"max_active": [16, 32, 64, 128], "steps_per_hop": [1, 4]},
    "music": {"max_active": [32, 64], "steps_per_hop": [1, 4, 8]},
}
CONCURRENCY = {"sentiment": (8, 64), "translate": (8, 64), "music": (8, 32)}


def bodies(task: str, texts: dict[str, list[str]]) -> tuple[str, list[dict]]:
    if task == "sentiment":
        return "/sentiment", [{"text": t} for t in texts["sentiment"]]
    if task == "translate":
        return "/translate", [{"text": t, "beam_size": 4} for t in texts["translate"]]
    return "/generate-music", [{"max_length": 200, "seed": seed} for seed in range(1000)]


def measure(task: str, settings: dict, models_dir: Path, texts: dict[str, list[str]], duration: float) -> dict:
    env = {f"SEQSERVE_{task.upper()}_{name.upper()}": str(value) for name, value in settings.items()}
    path, load = bodies(task, texts)
    with tempfile.TemporaryDirectory() as only_this_task:
        (Path(only_this_task) / task).symlink_to((models_dir / task).resolve())
        server = ServiceProcess(Path(only_this_task), env=env)
        try:
            levels = []
            for concurrency in CONCURRENCY[task]:
                before = server.batch_stats(task)
                result = run_load(server.url + path, load, concurrency, duration)
                after = server.batch_stats(task)
                result["mean_batch_size"] = (after[0] - before[0]) / max(after[1] - before[1], 1)
                levels.append(result)
        finally:
            server.stop()
    row = {"settings": settings, "levels": levels}
    print(f"  {task:<9} {json.dumps(settings):<42} " + "  ".join(
        f"c={r['concurrency']}: {r['requests_per_s']:7.1f}/s p50 {r['p50_ms']:6.1f} p99 {r['p99_ms']:6.1f} ms "
        f"batch {r['mean_batch_size']:5.1f} err {sum(r['errors'].values())}" for r in levels), flush=True)
    return row


def pick(rows: list[dict]) -> dict:
    """Best throughput at the top concurrency among settings whose p99 there is at most twice
    their p50 (a setting must not buy throughput by making some requests wait much longer)."""
    fair = [row for row in rows if row["levels"][-1]["p99_ms"] <= 2 * row["levels"][-1]["p50_ms"]] or rows
    return max(fair, key=lambda row: row["levels"][-1]["requests_per_s"])["settings"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tuning", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per load level")
    parser.add_argument("--tasks", default="sentiment,translate,music")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "tuning.json")
    args = parser.parse_args()
    texts = inputs()
    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "duration_s_per_level": args.duration, "tasks": {}}
    print(f"machine: {machine()}")
    for task in args.tasks.split(","):
        grid = GRIDS[task]
        rows = [measure(task, dict(zip(grid, values)), args.models_dir, texts, args.duration)
                for values in itertools.product(*grid.values())]
        report["tasks"][task] = {"concurrency": CONCURRENCY[task], "rows": rows, "picked": pick(rows)}
        print(f"  {task}: picked {report['tasks'][task]['picked']}", flush=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
