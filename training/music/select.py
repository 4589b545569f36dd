"""Measure every epoch a music run kept (`train.keep_epochs`) without the test split, so an
epoch can be chosen by copying as well as by validation loss, by a rule fixed in advance.

    python -m training.music.select runs/music/full-epochs --json out.json

Each kept epoch becomes a run folder of its own, `<run>/epoch-NN/` (its weights as best.pt,
the run's vocabulary, the run's summary with `exported_epoch`), which `python -m training
export music --run-dir` exports like any run; here it is exported as a candidate (both graphs,
parity checked) into `<run>/epoch-NN/candidate/`; an epoch whose graphs export refuses is
listed as refused, since it could not become a version. Measured with those ONNX graphs: the
validation split's cross-entropy, and tunes sampled at temperature 1.0 from seeds that
`evaluate` does not use (3000 onwards): the share passing the strict check and the share of
their 16-character spans found in the training text. The candidate and each epoch's figures
(selection.json) are kept in its folder and used again while the weights, the graphs and the
settings are the same. The rule itself is the caller's (docs/selection/music-epochs.md): this
module only measures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import onnxruntime as ort

from seqserve.characters import CharVocabulary
from seqserve.manifest import Manifest
from training import checkpoints
from training.loop import SUMMARY
from training.music import data
from training.music.config import Config
from training.music.evaluate import prompt_loss, sampled_figures, training_spans
from training.music.export import export
from training.music.train import VOCABULARY_FILE, validation_split

FIRST_SEED = 3000  # evaluate samples from 1000: the tunes that choose are not the ones that report
FIGURES = "selection.json"
COLUMNS = {"epoch": "epoch", "validation_loss_nats_per_char": "validation nats", "share_valid": "valid",
           "share_with_all_headers": "all headers", "mean_length_chars": "mean length",
           "share_of_16_char_spans_copied_from_training": "spans copied"}
CANDIDATE = "candidate"
WEIGHTS_DIGEST = "exported_from.sha256"  # in the candidate folder: the best.pt it was exported from


def epoch_run_dir(run_dir: Path, epoch: int, epoch_file: Path) -> Path:
    """A run folder for one kept epoch: what export reads (best.pt, the vocabulary, the
    summary, which says which epoch this is)."""
    folder = run_dir / epoch_file.stem
    folder.mkdir(exist_ok=True)
    best = folder / checkpoints.BEST
    best.unlink(missing_ok=True)  # linked afresh: a run trained again in the same folder wrote new files
    try:
        os.link(epoch_file, best)  # the same weights, no second copy on disk
    except OSError:
        shutil.copyfile(epoch_file, best)
    shutil.copyfile(run_dir / VOCABULARY_FILE, folder / VOCABULARY_FILE)
    summary = json.loads((run_dir / SUMMARY).read_text())
    summary["exported_epoch"] = epoch
    summary["exported_validation"] = summary["history"][epoch - 1]["validation"]
    (folder / SUMMARY).write_text(json.dumps(summary, indent=2) + "\n")
    return folder


def measure(folder: Path, epoch: int, samples: int, seen: set[str], validation_text: str) -> dict[str, Any]:
    """One kept epoch's figures (exported as a candidate first if it has not been); an epoch
    whose graphs export refuses is listed as refused."""
    model_dir = folder / CANDIDATE
    weights = hashlib.sha256((folder / checkpoints.BEST).read_bytes()).hexdigest()
    exported_from = model_dir / WEIGHTS_DIGEST
    if not (exported_from.is_file() and exported_from.read_text() == weights):
        shutil.rmtree(model_dir, ignore_errors=True)
        try:
            export(folder, model_dir, version=folder.name, candidate=True)
        except AssertionError as error:  # export's own checks (parity): this epoch could not become a version
            return {"epoch": epoch, "refused_by_export": str(error)}
        exported_from.write_text(weights)
    manifest = Manifest.load(model_dir)
    files = manifest.graph_files("fp32")
    key = hashlib.sha256(b"".join((model_dir / f).read_bytes() for f in sorted(files.values()))).hexdigest()
    settings = {"graphs_sha256": key, "samples": samples, "first_seed": FIRST_SEED}
    cached = folder / FIGURES
    if cached.is_file() and (stored := json.loads(cached.read_text()))["settings"] == settings:
        return stored["figures"]
    sessions = {kind: ort.InferenceSession(str(model_dir / file), providers=["CPUExecutionProvider"])
                for kind, file in files.items()}
    vocabulary = CharVocabulary.load(model_dir / manifest.preprocessing.vocabulary)
    figures = {
        "epoch": epoch,
        "validation_loss_nats_per_char": round(prompt_loss(sessions["prompt"], validation_text, vocabulary), 4),
        **sampled_figures(sessions, vocabulary, list(range(FIRST_SEED, FIRST_SEED + samples)), seen),
    }
    cached.write_text(json.dumps({"settings": settings, "figures": figures}, indent=2) + "\n")
    return figures


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.music.select", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--epochs", type=int, nargs="+", help="only these kept epochs (default: all)")
    parser.add_argument("--samples", type=int, default=200, help="tunes sampled per epoch (default 200)")
    parser.add_argument("--json", type=Path, help="also write every epoch's figures here")
    args = parser.parse_args(argv)
    kept = {epoch: path for epoch, path in checkpoints.kept_epochs(args.run_dir).items()
            if not args.epochs or epoch in args.epochs}
    if not kept:
        raise SystemExit(f"{args.run_dir} kept none of epochs {args.epochs}" if args.epochs else
                         f"{args.run_dir} kept no epochs: train it with --set train.keep_epochs=true")
    vocabulary = CharVocabulary.load(args.run_dir / VOCABULARY_FILE)
    config = Config.model_validate(checkpoints.load(next(iter(kept.values())))["config"])
    splits = data.load_splits()
    validation = validation_split(config, splits)  # the tunes the run validated on
    validation_text = vocabulary.clean(data.tunes_text(validation))[0]
    seen = training_spans(splits["train"])
    rows = []
    for epoch, epoch_file in kept.items():
        rows.append(measure(epoch_run_dir(args.run_dir, epoch, epoch_file), epoch, args.samples, seen,
                            validation_text))
        if len(rows) == 1:
            print(*(title.rjust(15) for title in COLUMNS.values()))
        row = rows[-1]
        measured = [str(row[key]).rjust(15) for key in COLUMNS if key in row]
        print(*measured, *(["  refused by export:", row["refused_by_export"]] if "refused_by_export" in row else []),
              flush=True)
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run_dir), "epochs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
