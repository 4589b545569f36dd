"""`python -m benchmarks`: load a real `python -m service` process on loopback and compare it
with the raw ONNX Runtime graphs run in-process at the same batch size, in the same run.

    python -m benchmarks                          # all tasks, concurrency 1/8/32/64, 15 s each
    python -m benchmarks --duration 30 --out benchmarks/results.json
    python -m benchmarks --soak 600               # 10 minutes at concurrency 32 across all endpoints

Inputs come from each task's test split (run `python -m training data <task>` first).
Prints a table and writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import threading
import time
from pathlib import Path

import httpx

from benchmarks import raw
from benchmarks.load import run_load
from benchmarks.server import REPO_ROOT, ServiceProcess


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB, {platform.system()} {platform.release()}"


def inputs() -> dict[str, list[str]]:
    from training.sentiment import data as sentiment
    from training.translate import data as translate

    return {"sentiment": [row["text"] for row in sentiment.load_splits()["test"]],
            "translate": [row["english"] for row in translate.load_splits()["test"]]}


def measure_endpoint(server: ServiceProcess, task: str, path: str, bodies: list[dict], concurrencies: list[int],
                     duration: float, raw_rate) -> list[dict]:
    rows = []
    for concurrency in concurrencies:
        before = server.batch_stats(task)
        result = run_load(server.url + path, bodies, concurrency, duration)
        after = server.batch_stats(task)
        batches = after[1] - before[1]
        result["mean_batch_size"] = (after[0] - before[0]) / batches if batches else float("nan")
        batch = max(1, round(result["mean_batch_size"]))
        result["raw_batch"] = batch
        result["raw_items_per_s"] = raw_rate(batch)  # server idle now: same cores, no contention
        result["share_of_raw"] = result["requests_per_s"] / result["raw_items_per_s"]
        rows.append(result)
        print(f"  {task:<9} c={concurrency:<3} {result['requests_per_s']:8.1f} req/s  p50 {result['p50_ms']:7.1f}  "
              f"p95 {result['p95_ms']:7.1f}  p99 {result['p99_ms']:7.1f} ms  batch {result['mean_batch_size']:5.1f}  "
              f"raw@{batch} {result['raw_items_per_s']:8.1f}/s  ({result['share_of_raw']:.0%})  "
              f"errors {sum(result['errors'].values())}  client cpu {result['client_cpu_share']:.0%}", flush=True)
    return rows


def generation_time(server: ServiceProcess, characters: int, seed: int, stream: bool) -> float:
    """Seconds from sending a request to its answer as a client sees it: streamed, the end of
    the stream (its final event comes after the tune checks); not streamed, the JSON answer."""
    started = time.perf_counter()
    body = {"max_length": characters, "seed": seed, "stream": stream}
    if not stream:
        httpx.post(f"{server.url}/generate-music", json=body, timeout=300).raise_for_status()
        return time.perf_counter() - started
    with httpx.stream("POST", f"{server.url}/generate-music", timeout=300, json=body) as response:
        for _ in response.iter_lines():
            pass
    return time.perf_counter() - started


GENERATION_CHARS = 500  # per request, not streamed: what a client sees


def measure_generation(server: ServiceProcess, models_dir: Path, duration: float, precision: str) -> dict:
    """One stream and 32 at once, as a client sees them (requests of GENERATION_CHARS, not
    streamed, their tune checks included); the step loop's own pace (its steps' rows over its
    steps' time) against the raw step graph at the same batch; and the time of 1,000
    characters over that of 200."""
    out = {}
    for streams in (1, 32):
        bodies = [{"max_length": GENERATION_CHARS, "seed": seed} for seed in range(1000)]
        before = server.run_stats("music")
        result = run_load(server.url + "/generate-music", bodies, streams, duration)
        after = server.run_stats("music")
        delta = {k: after[k] - before[k] for k in after}
        result["chars_per_s"] = result["requests_per_s"] * GENERATION_CHARS
        result["mean_batch_size"] = delta["items"] / max(delta["runs"], 1)
        result["step_loop_chars_per_s"] = delta["items"] / delta["seconds"] if delta["seconds"] else float("nan")
        out[f"streams_{streams}"] = against_raw_step(result, models_dir, precision)
        print(f"  music     {streams:>2} streams {result['chars_per_s']:8.0f} chars/s as clients see it; "
              f"{step_loop_line(result)}  errors {sum(result['errors'].values())}", flush=True)
    out["gain_32_streams"] = out["streams_32"]["chars_per_s"] / out["streams_1"]["chars_per_s"]
    for stream in (True, False):
        times = {n: sorted(generation_time(server, n, seed, stream) for seed in (1, 2, 3))[1] for n in (200, 1000)}
        key = "streamed" if stream else "not_streamed"
        out[key] = {"seconds_for_200_chars": times[200], "seconds_for_1000_chars": times[1000],
                    "ratio_1000_to_200": times[1000] / times[200]}
        print(f"  music     {key.replace('_', ' ')}: 200 chars {times[200]:.2f} s, 1000 chars {times[1000]:.2f} s "
              f"(x{times[1000] / times[200]:.2f})", flush=True)
    return out


def against_raw_step(result: dict, models_dir: Path, precision: str) -> dict:
    """`result` (with the step loop's pace and mean batch) plus the raw step graph's pace at
    that batch, and the share."""
    result["raw_chars_per_s"] = raw.music_rate(models_dir, max(1, round(result["mean_batch_size"])), precision)
    result["step_loop_share_of_raw"] = result["step_loop_chars_per_s"] / result["raw_chars_per_s"]
    return result


def step_loop_line(result: dict) -> str:
    return (f"step loop {result['step_loop_chars_per_s']:8.0f} chars/s at batch {result['mean_batch_size']:5.1f} "
            f"vs raw {result['raw_chars_per_s']:8.0f} ({result['step_loop_share_of_raw']:.1%})")


def measure_generation_in_process(models_dir: Path, duration: float, device: str) -> dict:
    """32 streams through the service's music model in this process (benchmarks/in_process.py):
    the step loop's pace without the HTTP work and the load generator beside it."""
    from benchmarks.in_process import measure_music_in_process

    result = measure_music_in_process(models_dir, 32, GENERATION_CHARS, duration, device)
    against_raw_step(result, models_dir, result["precision"])
    print(f"  music     32 streams in-process, no HTTP: {result['chars_per_s']:8.0f} chars/s; {step_loop_line(result)}",
          flush=True)
    return result


def measure_raw_sentiment(models_dir: Path, texts: list[str], precision: str) -> dict[str, float]:
    """Reviews/s of the bare graph on this machine (idle), batch 32, in every way measured."""
    rates = {f"{order}": raw.sentiment_rate(models_dir, texts, 32, order, precision) for order in raw.SENTIMENT_ORDERS}
    for order in ("grouped", "sorted"):
        rates[f"{order} x2 processes"] = raw.sentiment_rate_processes(models_dir, texts, 32, order, precision)
    print("  sentiment raw, batch 32 (" + precision + "): "
          + ", ".join(f"{name} {rate:.0f}/s" for name, rate in rates.items()), flush=True)
    return rates


def quality_and_speed(models_dir: Path, texts: dict[str, list[str]]) -> dict:
    """Per model: each precision's headline test-split figures (from the manifest, as evaluate
    measured them) next to its raw speed here."""
    from seqserve.manifest import Manifest, newest_version_dir

    out = {}
    for task in ("sentiment", "translate", "music"):
        manifest = Manifest.load(newest_version_dir(models_dir / task))
        row = {}
        for precision in ("fp32", *manifest.precisions):
            variant = manifest.precisions.get(precision)
            if task == "sentiment":
                speed = ("reviews/s, batch 32 sorted", raw.sentiment_rate(models_dir, texts["sentiment"], 32, "sorted", precision))
            elif task == "translate":
                speed = ("sentences/s, batch 32 beam 4", raw.translate_rate(models_dir, texts["translate"], 32, 4, precision))
            else:
                speed = ("chars/s, batch 32", raw.music_rate(models_dir, 32, precision))
            quality = ({path: f["this"] for path, f in variant.quality.items()} if variant else
                       {path: f["fp32"] for v in manifest.precisions.values() for path, f in v.quality.items()})
            row[precision] = {"quality": quality, "speed_unit": speed[0], "speed": speed[1],
                              "served": variant.servable if variant else True}
        out[task] = row
        print(f"  {task:<9} " + "; ".join(f"{p}: {r['speed']:.0f} {r['speed_unit']}, "
                                          + ", ".join(f"{k} {v:g}" for k, v in r["quality"].items())
                                          for p, r in row.items()), flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models-dir", type=Path, default=REPO_ROOT / "models")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per load level")
    parser.add_argument("--concurrency", default="1,8,32,64")
    parser.add_argument("--tasks", default="sentiment,translate,music")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the service and the raw graphs run (cuda: scripts/gpu_check on a GPU host)")
    parser.add_argument("--out", type=Path, default=None,
                        help="JSON report (default benchmarks/results.json, or soak.json with --soak)")
    parser.add_argument("--peers", action="store_true",
                        help="also serve the sentiment graph behind plain FastAPI and LitServe (and BentoML where it "
                             "installs) and compare them with the same client (benchmarks/peers.py)")
    parser.add_argument("--soak", type=float, default=0, metavar="SECONDS",
                        help="instead: a soak run of this length at concurrency 32 across all three endpoints")
    args = parser.parse_args()
    if args.soak:
        return soak(args.models_dir, args.soak, args.out or REPO_ROOT / "benchmarks" / "soak.json")
    args.out = args.out or REPO_ROOT / "benchmarks" / "results.json"
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    tasks = args.tasks.split(",")
    texts = inputs()

    if args.device == "cuda":
        raw.PROVIDERS.insert(0, "CUDAExecutionProvider")
    print(f"machine: {machine()}; device {args.device}")
    server = ServiceProcess(args.models_dir, args.device)
    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "device": args.device, "duration_s_per_level": args.duration, "cold_start_s": server.cold_start_s,
              "rss_mib_after_start": server.rss_mib()}
    print(f"cold start (spawn -> /readyz 200): {server.cold_start_s:.2f} s; RSS {report['rss_mib_after_start']:.0f} MiB")
    precisions = server.precisions()
    report["precisions"] = precisions
    print(f"precisions served: {precisions}")
    try:
        if "sentiment" in tasks:
            bodies = [{"text": t} for t in texts["sentiment"]]
            report["sentiment"] = measure_endpoint(
                server, "sentiment", "/sentiment", bodies, concurrencies, args.duration,
                lambda b: raw.sentiment_rate(args.models_dir, texts["sentiment"], b, "grouped", precisions["sentiment"]))
        if "translate" in tasks:
            bodies = [{"text": t, "beam_size": 4} for t in texts["translate"]]
            report["translate"] = measure_endpoint(
                server, "translate", "/translate", bodies, concurrencies, args.duration,
                lambda b: raw.translate_rate(args.models_dir, texts["translate"], b, 4, precisions["translate"]))
        if "music" in tasks:
            report["music"] = measure_generation(server, args.models_dir, args.duration, precisions["music"])
        report["rss_mib_at_end"] = server.rss_mib()
        report["service_cpu_s"] = server.cpu_seconds()
    finally:
        report["exit_status_after_sigterm"] = server.stop()
    # With the service stopped, on an idle machine: music in-process, then the bare graphs.
    if "music" in tasks:
        report["music"]["in_process_32"] = measure_generation_in_process(args.models_dir, args.duration, args.device)
    if "sentiment" in tasks:
        report["sentiment_raw"] = measure_raw_sentiment(args.models_dir, texts["sentiment"], precisions["sentiment"])
    report["quality_and_speed"] = quality_and_speed(args.models_dir, texts)
    if args.peers:
        from benchmarks import peers

        report["peers"] = peers.compare(args.models_dir, texts["sentiment"], args.duration, precisions["sentiment"],
                                        served=report.get("sentiment"))
    report["targets"] = targets(report)
    for name, (value, ok) in report["targets"].items():
        print(f"  {'PASS' if ok else 'MISS'}  {name}: {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def soak(models_dir: Path, duration: float, out: Path, concurrency: int = 32, warm_up_s: float = 60) -> int:
    """Errors (must be none) and resident-memory growth after warm-up (must be <= 10%)."""
    texts = inputs()
    server = ServiceProcess(models_dir)
    requests = []
    for i in range(600):
        requests.append((server.url + "/sentiment", {"text": texts["sentiment"][i]}))
        requests.append((server.url + "/translate", {"text": texts["translate"][i], "beam_size": 1 + i % 8}))
        if i % 3 == 0:
            requests.append((server.url + "/generate-music", {"max_length": 100 + i % 400, "seed": i}))
    print(f"soak: warm-up {warm_up_s:.0f} s, then {duration:.0f} s at concurrency {concurrency}", flush=True)
    warm = run_load(None, [], concurrency, warm_up_s, requests=requests)
    baseline = server.rss_mib()
    samples = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(10):
            samples.append(server.rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    result = run_load(None, [], concurrency, duration, requests=requests)
    stop.set()
    sampler.join()
    final = server.rss_mib()
    status = server.stop()
    report = {"when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "duration_s": duration, "concurrency": concurrency, "warm_up": warm, "load": result,
              "rss_mib_after_warm_up": baseline, "rss_mib_at_end": final, "rss_mib_peak": max(samples + [final]),
              "rss_growth": final / baseline - 1, "errors": result["errors"], "exit_status_after_sigterm": status}
    errors = sum(result["errors"].values()) + sum(warm["errors"].values())
    print(f"  {result['requests']} requests ({result['requests_per_s']:.1f}/s), errors {errors}, p50 "
          f"{result['p50_ms']:.0f} ms, p99 {result['p99_ms']:.0f} ms; RSS {baseline:.0f} -> {final:.0f} MiB "
          f"({report['rss_growth']:+.1%}), peak {report['rss_mib_peak']:.0f} MiB; exit {status}")
    print(f"  {'PASS' if errors == 0 else 'MISS'}  no errors; "
          f"{'PASS' if report['rss_growth'] <= 0.10 else 'MISS'}  RSS growth <= 10%")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def targets(report: dict) -> dict[str, tuple[str, bool]]:
    """The targets of issues 5 and 18, each as (measured, met)."""
    out: dict[str, tuple[str, bool]] = {
        "cold start <= 10 s": (f"{report['cold_start_s']:.2f} s", report["cold_start_s"] <= 10),
        "RSS with all models <= 1 GB": (f"{report['rss_mib_at_end']:.0f} MiB", report["rss_mib_at_end"] <= 1024),
        "exit status 0 after SIGTERM": (str(report["exit_status_after_sigterm"]), report["exit_status_after_sigterm"] == 0),
    }
    if "sentiment" in report:
        levels = {row["concurrency"]: row for row in report["sentiment"]}
        top, one = levels[max(levels)], levels[min(levels)]
        if "sentiment_raw" in report:
            best_name, best = max(report["sentiment_raw"].items(), key=lambda item: item[1])
            share = top["requests_per_s"] / best
            out[f"sentiment c{top['concurrency']} >= 90% of the best raw ({best_name}, {report['precisions']['sentiment']})"] = (
                f"{share:.0%} ({top['requests_per_s']:.0f} vs {best:.0f}/s)", share >= 0.9)
        speedup = top["requests_per_s"] / one["requests_per_s"]
        out["sentiment c64 >= 3x c1"] = (f"x{speedup:.1f}", speedup >= 3)
        tail = top["p99_ms"] / top["p50_ms"]
        out["sentiment p99 <= 3x p50 at c64"] = (f"x{tail:.2f}", tail <= 3)
    if "music" in report:
        m = report["music"]
        out["generation 32 streams >= 3.5x one stream (500 chars, not streamed)"] = (
            f"x{m['gain_32_streams']:.1f}", m["gain_32_streams"] >= 3.5)
        loop = m["streams_32"]["step_loop_share_of_raw"]
        out["step loop within 15% of the raw step graph at 32 streams"] = (f"{loop:.0%}", loop >= 0.85)
        for key in ("streamed", "not_streamed"):
            ratio = m[key]["ratio_1000_to_200"]
            out[f"1000 chars <= 5.2x the time of 200 ({key.replace('_', ' ')})"] = (f"x{ratio:.2f}", ratio <= 5.2)
    errors = sum(sum(row["errors"].values()) for task in ("sentiment", "translate") for row in report.get(task, []))
    errors += sum(sum(m["errors"].values()) for k, m in report.get("music", {}).items() if k.startswith("streams"))
    out["no errors"] = (str(errors), errors == 0)
    return {name: (value, bool(ok)) for name, (value, ok) in out.items()}


if __name__ == "__main__":
    raise SystemExit(main())
