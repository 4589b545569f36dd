"""Carry the committed models and the onnxruntime-gpu wheel to a lent GPU machine whose calls
take at most 64 MiB each (the working tree included), then put them back together there.

The models (about 150 MB of fp32 graphs) and the wheel (about 256 MB) are more than one call
may carry, so they travel in parts over calls made back to back while the machine stays warm;
each part is moved on arrival into `.stash/`, an ignored folder that persists there between
calls, and the last call joins them, checks every file's sha256 and runs the GPU check.

Here, before the calls (stdlib only, no network but for the wheel's download):

    python3 scripts/device_carry.py pack      # .carry/call-NN/ folders, each under the budget
    python3 scripts/device_carry.py aside     # models/ -> .carry/aside/ so the tree travels small

Then one `run` per call folder, in order, each carrying only its folder:

    call 1 .. K-1:  python3 scripts/device_carry.py receive
    call K:         python3 scripts/device_carry.py receive && python3 scripts/device_carry.py join && scripts/gpu_check

and afterwards, here: `python3 scripts/device_carry.py restore` (models/ back in place).
`pack` prints the exact calls. Rehearsed here by tests/scripts/test_device_carry.py and by hand
(docs/deployment.md#gpu-check).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

MIB = 1024 * 1024
CALL_LIMIT = 64 * MIB  # what one call may carry, the working tree included
MARGIN = 2 * MIB  # for the tree's own small changes between packing and the calls
PLAN = "plan.json"
WHEEL_PYTHON = "3.12"  # the lent machine's interpreter (its KINDS.md)
WHEEL = "onnxruntime-gpu==1.31.1"


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


def fetch_wheel(root: Path) -> Path:
    """The onnxruntime-gpu wheel for the lent machine's Python, downloaded into .whl/ once."""
    target = root / ".whl"
    tag = "cp" + WHEEL_PYTHON.replace(".", "")
    found = sorted(target.glob(f"onnxruntime_gpu-*-{tag}-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", WHEEL_PYTHON, "--implementation", "cp",
                        "--platform", "manylinux_2_28_x86_64", "--platform", "manylinux_2_27_x86_64",
                        "--platform", "manylinux_2_17_x86_64", "-d", str(target), WHEEL], check=True)
        found = sorted(target.glob(f"onnxruntime_gpu-*-{tag}-*.whl"))
    return found[-1]


def pack(root: Path, wheels: list[Path], with_int8: bool, part_bytes: int | None) -> list[Path]:
    """Split the models (as one tar) and the wheels into parts and share them among call
    folders .carry/call-NN/, each with the plan; returns the call folders in order."""
    carry = root / ".carry"
    for old in carry.glob("call-*"):
        shutil.rmtree(old)
    build = carry / "build"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    models_root = (root / "models").parent if (root / "models").is_dir() else carry / "aside"
    archive = build / "models.tar"
    with tarfile.open(archive, "w") as tar:  # uncompressed: float weights hardly compress
        for path in model_files(root, with_int8):
            tar.add(path, arcname=str(path.relative_to(models_root)))

    tree = tree_bytes(root) - sum(p.stat().st_size for p in model_files(root, True) if (root / "models").is_dir())
    budget = part_bytes or CALL_LIMIT - tree - MARGIN
    if budget <= 0:
        raise SystemExit(f"the working tree alone ({tree / MIB:.1f} MiB) leaves no room under 64 MiB")

    files = [{"name": "models.tar", "kind": "models", "path": archive}]
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


def join(root: Path) -> list[str]:
    """On the device, after the last call's parts: every file joined and checked against its
    sha256; the models extracted into models/, the wheels into .whl/."""
    stash = root / ".stash"
    if not (stash / PLAN).is_file():
        raise SystemExit("no plan in .stash/: run `receive` in each call first")
    if lost := missing(root):
        raise SystemExit(f"parts not received yet: {', '.join(lost)}")
    plan = json.loads((stash / PLAN).read_text())
    done = []
    for entry in plan["files"]:
        joined = stash / entry["name"]
        with open(joined, "wb") as out:
            for index in range(entry["parts"]):
                with open(stash / f"{entry['name']}.part-{index:03d}", "rb") as part:
                    shutil.copyfileobj(part, out)
        if (digest := sha256(joined)) != entry["sha256"]:
            raise SystemExit(f"{entry['name']}: sha256 {digest[:12]}… is not the packed {entry['sha256'][:12]}…")
        if entry["kind"] == "models":
            if (root / "models").exists():
                shutil.rmtree(root / "models")
            with tarfile.open(joined) as tar:
                tar.extractall(root, filter="data")
            joined.unlink()
        else:
            (root / ".whl").mkdir(exist_ok=True)
            shutil.move(str(joined), str(root / ".whl" / entry["name"]))
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=["pack", "aside", "restore", "receive", "join"])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    parser.add_argument("--wheel", type=Path, action="append", help="wheels to carry (default: onnxruntime-gpu for Python 3.12)")
    parser.add_argument("--with-int8", action="store_true", help="also carry the int8 graphs")
    parser.add_argument("--part-bytes", type=int, help="a part's size (default: what 64 MiB leaves beside the tree)")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.step == "pack":
        wheels = args.wheel if args.wheel is not None else [fetch_wheel(root)]
        folders = pack(root, wheels, args.with_int8, args.part_bytes)
        plan = json.loads((folders[0] / PLAN).read_text())
        print(f"{len(folders)} calls, parts of at most {plan['budget_bytes'] / MIB:.1f} MiB beside a "
              f"{plan['tree_bytes'] / MIB:.1f} MiB tree:")
        for number, folder in enumerate(folders, start=1):
            command = "python3 scripts/device_carry.py receive"
            if number == len(folders):
                command += " && python3 scripts/device_carry.py join && scripts/gpu_check"
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
    else:
        print("joined and checked: " + ", ".join(join(root)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
