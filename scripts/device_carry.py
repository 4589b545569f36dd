"""Carry what a lent GPU machine needs to it, in parts, when its calls take at most 64 MiB
each (the working tree included), put it back together there, and bring results back.

For the GPU check (`--for check`, the default): the committed fp32 graphs (about 150 MB) and
the onnxruntime-gpu wheel for the machine's Python 3.12 (about 256 MB), more than one call may
carry, and pydantic's wheels (the manifest's types). For training there (`--for train --task
T`): each task's prepared data cache and the wheels `python -m training` needs that the machine
lacks (pydantic's), usually one call. Each
part is moved on arrival into `.stash/`, an ignored folder that persists there between calls
made back to back while the machine stays warm; the last call joins them (every file's sha256
checked) and runs the work. A checkpoint comes back through $OUT, whose files are capped at
16 MiB: `send-back` writes it in parts (best.pt without its optimizer state), `take-back` joins
them here.

Here, before the calls (stdlib only; run by the project's .venv/bin/python, which pins the
wheels it carries to the versions installed here):

    .venv/bin/python scripts/device_carry.py pack     # .carry/call-NN/ folders, each under the budget; prints the calls
                                                      # (--with-service: also what the load benchmark needs there)
    python3 scripts/device_carry.py aside             # models/ -> .carry/aside/ so the tree travels small

Then one `run` per call folder, in order, each carrying only its folder:

    call 1 .. K-1:  python3 scripts/device_carry.py receive
    call K:         python3 scripts/device_carry.py receive && python3 scripts/device_carry.py join &&
                    SEQSERVE_CACHE_DIR=$PWD/.stash/cache GPU_CHECK_OUT=$OUT/gpu_check.json scripts/gpu_check

and afterwards, here: `python3 scripts/device_carry.py restore` (models/ back in place), and
for a training run `python3 scripts/device_carry.py take-back <files_at> --to runs/<task>/<name>`.
Rehearsed here by tests/scripts/test_device_carry.py and by hand (docs/deployment.md#gpu-check).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIB = 1024 * 1024
CALL_LIMIT = 64 * MIB  # what one call may carry, the working tree included
MARGIN = 2 * MIB  # for the tree's own small changes between packing and the calls
PLAN = "plan.json"
WHEEL_PYTHON = "3.12"  # the lent machine's interpreter (its KINDS.md)
WHEEL = "onnxruntime-gpu==1.31.1"
# What `python -m training` imports that the lent machine lacks (it has torch, numpy, tokenizers,
# onnx, onnxscript, onnxruntime, sacrebleu, tqdm, pandas and typing-extensions).
TRAINING_PACKAGES = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection")
# What the service and `python -m benchmarks` import beyond those that the lent machine lacks
# (`--with-service`, so that scripts/gpu_check runs the load benchmark there), and what of the
# service's needs it has. tests/scripts/test_device_carry.py checks the two cover the service's
# requirements as installed here.
SERVICE_PACKAGES = ("fastapi", "starlette", "uvicorn", "httptools", "pydantic-settings", "python-dotenv",
                    "opentelemetry-api", "music21", "chardet", "jsonpickle", "more-itertools", "webcolors",
                    "pebble", "limits", "deprecated")
DEVICE_HAS = ("numpy", "tokenizers", "anyio", "h11", "click", "typing-extensions", "annotated-doc",
              "packaging", "joblib", "matplotlib", "requests", "wrapt", "prometheus-client", "uvloop", "httpx",
              "aiohttp")
BENCHMARK_TASKS = ("sentiment", "translate")  # whose test splits the load benchmark sends
RETURN_FILE_LIMIT, RETURN_FILES, RETURN_LIMIT = 16 * MIB, 8, 64 * MIB  # what $OUT brings back from one call
BACK = "back.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(MIB):
            digest.update(chunk)
    return digest.hexdigest()


def tree_bytes(root: Path) -> int:
    """What a call sends besides its carry: tracked and untracked-not-ignored files that exist
    (models/ counts unless it has been moved aside)."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root,
                            capture_output=True, check=True).stdout.decode().split("\0")
    return sum((root / name).stat().st_size for name in listed if name and (root / name).is_file())


def model_files(root: Path, with_int8: bool) -> list[Path]:
    """Every file under models/ (the GPU runs the fp32 graphs: int8 ones only if asked)."""
    models = root / "models"
    if not models.is_dir():
        models = root / ".carry" / "aside" / "models"
    return sorted(p for p in models.rglob("*") if p.is_file() and (with_int8 or ".int8." not in p.name))


def fetch_wheels(root: Path, specs: list[str]) -> list[Path]:
    """Wheels for the lent machine's Python (`NAME==VERSION` each), downloaded into .whl/ once."""
    target = root / ".whl"
    tag = "cp" + WHEEL_PYTHON.replace(".", "")
    fits = lambda wheel: f"-{tag}-" in wheel.name or wheel.name.endswith("-none-any.whl")  # noqa: E731 (pure: py3, py2.py3)
    found = []
    for spec in specs:
        name, version = spec.split("==")
        pattern = f"{name.replace('-', '_')}-{version}-*.whl"
        wheels = [w for w in target.glob(pattern) if fits(w)]
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                            "--python-version", WHEEL_PYTHON, "--implementation", "cp",
                            "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                            "--platform", "manylinux_2_17_x86_64", "-d", str(target), spec], check=True)
            wheels = [w for w in target.glob(pattern) if fits(w)]
        found.append(sorted(wheels)[-1])
    return found


def installed_wheels(names: tuple[str, ...]) -> list[str]:
    """`NAME==VERSION` for each of `names` at the version installed here (what the lent machine
    lacks, from its KINDS.md list: pydantic and its needs for training and the check, the
    service stack for the benchmark)."""
    try:
        return [f"{name}=={version(name)}" for name in names]
    except PackageNotFoundError as missing:
        raise SystemExit(f"{missing} is not installed in this interpreter: run pack with the project's "
                         ".venv/bin/python, or name the wheels with --wheel") from None


def cache_dir() -> Path:
    """The project's data cache (training.config.cache_dir, without importing the project)."""
    return Path(os.environ.get("SEQSERVE_CACHE_DIR", Path.home() / ".cache" / "seqserve")).expanduser()


def pack(root: Path, wheels: list[Path], with_int8: bool, part_bytes: int | None, models: bool = True,
         caches: dict[str, Path] | None = None) -> list[Path]:
    """Split the models (as one tar), each task's data cache (`caches`: task -> its folder, a
    tar each, for training there) and the wheels into parts and share them among call folders
    .carry/call-NN/, each with the plan; returns the call folders in order."""
    carry = root / ".carry"
    for old in carry.glob("call-*"):
        shutil.rmtree(old)
    build = carry / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    files = []
    if models:
        models_root = (root / "models").parent if (root / "models").is_dir() else carry / "aside"
        archive = build / "models.tar"
        with tarfile.open(archive, "w") as tar:  # uncompressed: float weights hardly compress
            for path in model_files(root, with_int8):
                tar.add(path, arcname=str(path.relative_to(models_root)))
        files.append({"name": "models.tar", "kind": "models", "path": archive})
    for task, folder in (caches or {}).items():
        archive = build / f"cache-{task}.tar"
        with tarfile.open(archive, "w") as tar:
            tar.add(folder, arcname=task)
        files.append({"name": archive.name, "kind": "cache", "path": archive})

    if part_bytes:
        tree, budget = None, part_bytes
    else:  # what 64 MiB leaves beside the tree as it will travel (models/ set aside)
        tree = tree_bytes(root) - sum(p.stat().st_size for p in model_files(root, True) if (root / "models").is_dir())
        budget = CALL_LIMIT - tree - MARGIN
        if budget <= 0:
            raise SystemExit(f"the working tree alone ({tree / MIB:.1f} MiB) leaves no room under 64 MiB")

    files += [{"name": wheel.name, "kind": "wheel", "path": wheel} for wheel in wheels]
    # One stream of every file, cut into calls of `budget` bytes: a call may end one file and
    # begin the next, so no call travels half empty.
    calls: list[list[tuple[str, int, int, int]]] = [[]]  # per call: (file name, index, offset, length)
    room = budget
    for entry in files:
        size = entry["path"].stat().st_size
        entry |= {"size": size, "sha256": sha256(entry["path"]), "parts": 0}
        offset = 0
        while True:  # at least one part, even of an empty file
            if room == 0:
                calls.append([])
                room = budget
            length = min(room, size - offset)
            calls[-1].append((entry["name"], entry["parts"], offset, length))
            entry["parts"] += 1
            offset, room = offset + length, room - length
            if offset >= size:
                break
    plan = {"files": [{k: v for k, v in e.items() if k != "path"} for e in files], "calls": len(calls),
            "budget_bytes": budget, "tree_bytes": tree}
    sources = {e["name"]: e["path"] for e in files}
    folders = []
    for number, call in enumerate(calls, start=1):
        folder = carry / f"call-{number:02d}"
        folder.mkdir()
        for name, index, offset, length in call:
            with open(sources[name], "rb") as source, open(folder / f"{name}.part-{index:03d}", "wb") as out:
                source.seek(offset)
                out.write(source.read(length))
        (folder / PLAN).write_text(json.dumps(plan, indent=1) + "\n")
        folders.append(folder)
    shutil.rmtree(build)
    return folders


def receive(root: Path) -> list[str]:
    """On the device: move the parts carried by this call into .stash/ (which persists while
    the machine stays warm); returns the parts now stashed."""
    stash = root / ".stash"
    stash.mkdir(exist_ok=True)
    for folder in sorted((root / ".carry").glob("call-*")):
        for item in folder.iterdir():
            shutil.move(str(item), str(stash / item.name))
    return sorted(p.name for p in stash.iterdir())


def missing(root: Path) -> list[str]:
    stash = root / ".stash"
    plan = json.loads((stash / PLAN).read_text())
    return [f"{f['name']}.part-{i:03d}" for f in plan["files"] for i in range(f["parts"])
            if not (stash / f"{f['name']}.part-{i:03d}").is_file()]


def join_parts(folder: Path, entry: dict, target: Path) -> None:
    """`entry`'s parts in `folder` (NAME.part-NNN) concatenated into `target`, which is
    removed again unless its sha256 is the one recorded when the parts were cut."""
    with open(target, "wb") as out:
        for index in range(entry["parts"]):
            with open(folder / f"{entry['name']}.part-{index:03d}", "rb") as part:
                shutil.copyfileobj(part, out)
    if (digest := sha256(target)) != entry["sha256"]:
        target.unlink()
        raise SystemExit(f"{entry['name']}: sha256 {digest[:12]}… is not the recorded {entry['sha256'][:12]}…")


def join(root: Path) -> list[str]:
    """On the device, after the last call's parts: every file joined and checked against its
    sha256; the models extracted into models/, the data caches into .stash/cache/ (for
    SEQSERVE_CACHE_DIR), the wheels into .whl/."""
    stash = root / ".stash"
    if not (stash / PLAN).is_file():
        raise SystemExit("no plan in .stash/: run `receive` in each call first")
    if lost := missing(root):
        raise SystemExit(f"parts not received yet: {', '.join(lost)}")
    plan = json.loads((stash / PLAN).read_text())
    done = []
    for entry in plan["files"]:
        joined = stash / entry["name"]
        join_parts(stash, entry, joined)
        if entry["kind"] in ("models", "cache"):  # models/ in the tree; caches under .stash/cache/
            target = root if entry["kind"] == "models" else stash / "cache"
            with tarfile.open(joined) as tar:
                for top in {name.split("/")[0] for name in tar.getnames()}:
                    shutil.rmtree(target / top, ignore_errors=True)
                tar.extractall(target, filter="data")
            joined.unlink()
        else:
            (root / ".whl").mkdir(exist_ok=True)
            shutil.move(str(joined), str(root / ".whl" / entry["name"]))
        done.append(entry["name"])
    return done


def send_back(paths: list[Path], out: Path) -> list[Path]:
    """On the device: what a run made (files, or a run folder: its checkpoint, summary and
    tokenizer) written into `out` ($OUT) in parts of at most 16 MiB, with back.json (names,
    sizes, sha256), within what one call brings back: 8 files, 64 MiB. Refuses, naming the
    sizes, what would not fit."""
    # A run folder: every file in it but last.pt (weights, optimizer and RNG state for resuming
    # there, which stays on the device while it is warm).
    paths = [f for path in paths for f in (sorted(p for p in path.iterdir() if p.is_file() and p.name != "last.pt")
                                           if path.is_dir() else [path])]
    out.mkdir(parents=True, exist_ok=True)
    slim = Path(tempfile.gettempdir()) / f"device-carry-best-{os.getpid()}.pt"  # never inside $OUT
    paths = [export_checkpoint(path, slim) if path.name == "best.pt" else path for path in paths]
    entries, parts = [], []
    for path in paths:
        size = path.stat().st_size
        count = max(1, -(-size // RETURN_FILE_LIMIT))
        name = "best.pt" if path == slim else path.name
        entries.append({"name": name, "size": size, "sha256": sha256(path), "parts": count})
        parts += [(path, i) for i in range(count)]
    total = sum(e["size"] for e in entries)
    if len(parts) + 1 > RETURN_FILES or total > RETURN_LIMIT - MIB:
        slim.unlink(missing_ok=True)
        raise SystemExit(f"{len(parts)} parts, {total / MIB:.1f} MiB: more than one call brings back "
                         f"({RETURN_FILES - 1} parts of 16 MiB beside back.json, under 63 MiB); send fewer files")
    written = []
    for path, index in parts:
        name = "best.pt" if path == slim else path.name
        with open(path, "rb") as source, open(out / f"{name}.part-{index:03d}", "wb") as target:
            source.seek(index * RETURN_FILE_LIMIT)
            target.write(source.read(RETURN_FILE_LIMIT))
        written.append(out / f"{name}.part-{index:03d}")
    slim.unlink(missing_ok=True)
    (out / BACK).write_text(json.dumps({"files": entries}, indent=1) + "\n")
    return written + [out / BACK]


def export_checkpoint(path: Path, target: Path) -> Path:
    """A best.pt with what export and `train.init_from` read (the validated weights, the
    model's arguments, the config), without the optimizer, generator and raw-weight state that
    only --resume reads: a translation member's best.pt is 77 MiB with Adam's state, 26 MiB
    without. Needs torch (the device has it)."""
    import torch

    sys.path.insert(0, str(ROOT))  # the project's checkpoint format (torch and numpy only)
    from training.checkpoints import weights_only

    torch.save(weights_only(torch.load(path, map_location="cpu", weights_only=False)), target)
    return target


def take_back(source: Path, destination: Path) -> list[str]:
    """Here: the files send-back wrote, joined from the parts that came back and checked
    against their sha256, into `destination` (a run folder)."""
    plan = json.loads((source / BACK).read_text())
    destination.mkdir(parents=True, exist_ok=True)
    done = []
    for entry in plan["files"]:
        join_parts(source, entry, destination / entry["name"])
        done.append(entry["name"])
    return done


def aside(root: Path) -> None:
    target = root / ".carry" / "aside" / "models"
    if target.exists():
        raise SystemExit(f"{target} exists already: `restore` first")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(root / "models"), str(target))


def restore(root: Path) -> None:
    source = root / ".carry" / "aside" / "models"
    if (root / "models").exists():
        raise SystemExit("models/ exists: nothing to restore over")
    shutil.move(str(source), str(root / "models"))
    source.parent.rmdir()  # .carry/aside/, now empty


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["pack", "aside", "restore", "receive", "join", "send-back", "take-back"])
    parser.add_argument("paths", nargs="*", type=Path, help="send-back: the files; take-back: the folder that came back")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--for", dest="purpose", choices=["check", "train"], default="check",
                        help="check (default): the models and onnxruntime-gpu for scripts/gpu_check; train: the "
                             "data of each --task and the wheels `python -m training` needs there")
    parser.add_argument("--task", action="append", default=[], help="train: a task whose data cache travels")
    parser.add_argument("--wheel", type=Path, action="append", help="the wheels to carry instead of the default ones")
    parser.add_argument("--with-service", action="store_true",
                        help="check: also the service stack's wheels, the int8 graphs and the sentiment and "
                             "translation data caches, so that scripts/gpu_check runs the load benchmark on the GPU")
    parser.add_argument("--with-int8", action="store_true", help="also carry the int8 graphs")
    parser.add_argument("--part-bytes", type=int, help="a part's size (default: what 64 MiB leaves beside the tree)")
    parser.add_argument("--out", type=Path, help="send-back: where the parts go ($OUT)")
    parser.add_argument("--to", type=Path, help="take-back: the folder the files are joined into")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.step == "pack":
        training = args.purpose == "train"
        if training and not args.task:
            parser.error("--for train needs at least one --task")
        if training and args.with_service:
            parser.error("--with-service is for the check (--for check)")
        caches = {task: cache_dir() / task for task in args.task + list(BENCHMARK_TASKS if args.with_service else ())}
        for task, folder in caches.items():
            if not (folder / "meta.json").is_file():
                parser.error(f"{folder} holds no prepared data: run `python -m training data {task}` first")
        # gpu_check reads manifests with pydantic; the benchmark needs the service stack.
        specs = installed_wheels(TRAINING_PACKAGES + (SERVICE_PACKAGES if args.with_service else ())) \
            + ([] if training else [WHEEL])
        wheels = args.wheel if args.wheel is not None else fetch_wheels(root, specs)
        # The service refuses a version whose files do not all match its manifest: int8 graphs too.
        folders = pack(root, wheels, args.with_int8 or args.with_service, args.part_bytes, models=not training,
                       caches=caches)
        plan = json.loads((folders[0] / PLAN).read_text())
        beside = f" beside a {plan['tree_bytes'] / MIB:.1f} MiB tree" if plan["tree_bytes"] is not None else ""
        print(f"{len(folders)} calls, parts of at most {plan['budget_bytes'] / MIB:.1f} MiB{beside}:")
        last = ("python3 scripts/device_carry.py join && python3 -m pip install -q --no-index --no-deps --target "
                "/tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site SEQSERVE_CACHE_DIR=$PWD/.stash/cache && "
                "python3 -m training train <task> --device cuda --run-dir .stash/runs/<name> --no-progress && "
                "python3 scripts/device_carry.py send-back .stash/runs/<name> --out $OUT") if training else (
                "python3 scripts/device_carry.py join && SEQSERVE_CACHE_DIR=$PWD/.stash/cache "
                "GPU_CHECK_OUT=$OUT/gpu_check.json scripts/gpu_check")
        for number, folder in enumerate(folders, start=1):
            command = "python3 scripts/device_carry.py receive" + (f" && {last}" if number == len(folders) else "")
            size = sum(p.stat().st_size for p in folder.iterdir()) / MIB
            print(f"  call {number}: carry [{str(folder.relative_to(root))!r}] ({size:.1f} MiB): {command}")
        if (root / "models").is_dir():
            print("then move models/ aside before the first call: python3 scripts/device_carry.py aside")
    elif args.step in ("aside", "restore"):
        (aside if args.step == "aside" else restore)(root)
    elif args.step == "receive":
        stashed = receive(root)
        lost = missing(root) if (root / ".stash" / PLAN).is_file() else ["(no plan yet)"]
        print(f"stashed {len(stashed)} files; still to come: {', '.join(lost) or 'nothing'}")
    elif args.step == "join":
        print("joined and checked: " + ", ".join(join(root)))
    elif args.step == "send-back":
        if not args.paths or args.out is None:
            parser.error("send-back needs the files and --out")
        print("sent back: " + ", ".join(p.name for p in send_back(args.paths, args.out)))
    else:
        if len(args.paths) != 1 or args.to is None:
            parser.error("take-back needs the folder that came back and --to")
        print("taken back: " + ", ".join(take_back(args.paths[0], args.to)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
