"""`python -m training <step> <task> [options]`: the training pipeline's command line.

    python -m training data sentiment             fetch, clean and split the data (cache)
    python -m training train sentiment            train (checkpoint every epoch; --resume)
    python -m training export sentiment           export to ONNX as the next version under models/, checked
    python -m training evaluate sentiment --json  evaluate the exported ONNX model (--precision int8: its INT8 graphs)
    python -m training quantize sentiment         add (or redo) the INT8 graphs of a version: quantize, evaluate, judge
    python -m training recover sentiment          read a committed version's members back into runs/ (to
                                                  fine-tune, or to ensemble with, in a fresh checkout)

To choose between translation candidates without looking at the test split: `export
translate --candidate --model-dir DIR` (graphs checked, not evaluated), then `evaluate
translate --split validation --model-dir DIR`. Music's epochs: `python -m training.music.select`.

Tasks: sentiment, music, translate; each is a package, training/<task>/, whose modules data,
train, export and evaluate are these steps.

`export` writes models/<task>/<N+1>/, N being the highest version there (1 if none), and
never replaces an existing version unless given --force. The service serves the highest
version of each task. models/ is SEQSERVE_MODELS_DIR when set (as for the service).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import import_module
from pathlib import Path

from seqserve.manifest import PRECISIONS, Manifest, newest_version_dir
from training.config import load_config, models_dir, runs_dir
from training.quantize import add_int8
from training.versions import VersionExists, check_target, newest_model_dir, next_version

TASKS = ("sentiment", "music", "translate")
STEPS = ("data", "train", "export", "evaluate", "quantize", "recover")


def version_number(text: str) -> str:
    """A model version as the service orders them: a positive integer."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return str(int(text))


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True, metavar="{" + ",".join(STEPS) + "}")

    def add(step: str, help_text: str) -> argparse.ArgumentParser:
        sub = steps.add_parser(step, help=help_text)
        sub.add_argument("task", choices=TASKS)
        sub.add_argument("--profile", default="full",
                         help="config profile (default full; smoke: what the tests run; see training/configs/)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override one config value, e.g. --set train.learning_rate=0.001 (checked like the file)")
        return sub

    add("data", "fetch the pinned artifact, clean, deduplicate, split")

    train = add("train", "train a model; writes checkpoints under runs/<task>/<profile>/")
    train.add_argument("--run-dir", type=Path, help="where checkpoints go (default runs/<task>/<profile>)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run dir")
    train.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (logs one line per epoch)")

    export = add("export", "export the best checkpoint to ONNX and write the model version")
    export.add_argument("--run-dir", type=Path)
    export.add_argument("--model-dir", type=Path,
                        help="output folder (default models/<task>/<version>); its name is the default version")
    export.add_argument("--version", type=version_number,
                        help="version to write (default: one more than the highest under models/<task>/, 1 if none); "
                             "an existing version is refused unless --force")
    export.add_argument("--force", action="store_true",
                        help="replace the version if it exists (the old one is removed only once the new one "
                             "is in place)")
    export.add_argument("--ensemble-with", type=Path, action="append", default=[], metavar="RUN_DIR",
                        help="sentiment, translate: this run's best checkpoint joins --run-dir's as a member "
                             "of one ensemble (same tokenizer; repeatable)")
    export.add_argument("--candidate", action="store_true",
                        help="translate, music: check the graphs but do not evaluate them on the test split (no metrics, "
                             "no INT8 graphs), to choose on validation; needs a --model-dir outside the models folder")

    evaluate = add("evaluate", "evaluate an exported model on the test split (translate: or --split validation)")
    evaluate.add_argument("--model-dir", type=Path, help="default: the newest version under models/<task>/")
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N examples of the split (sentiment: of each source)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--split", default="test", choices=("test", "validation"),
                          help="translate: the split scored (default test; validation to choose between candidates)")
    evaluate.add_argument("--precision", default="fp32", choices=PRECISIONS,
                          help="the version's graphs in this precision (default fp32)")
    evaluate.add_argument("--record", action="store_true",
                          help="fp32 only: write the metrics into the version's manifest (after a change to the shared "
                               "decoding code; then run `quantize` to judge the int8 graphs against them again)")

    quantize = add("quantize", "write the INT8 graphs beside a version's fp32 ones, evaluate them on the test split "
                               "and record in the manifest whether they are close enough to serve (export does this)")
    quantize.add_argument("--model-dir", type=Path, help="default: the newest version under models/<task>/")

    recover = steps.add_parser("recover", help="read a version's trained members back out of its graphs into run "
                                               "folders (checked against the graphs), to export, fine-tune or "
                                               "ensemble them")
    recover.add_argument("task", choices=TASKS)
    recover.add_argument("--model-dir", type=Path, help="default: the newest version under models/<task>/")
    recover.add_argument("--run-dir", type=Path,
                         help="default runs/<task>/recovered-<version> (an ensemble's members in member-<i>/)")

    # Not listed: export's own call, one fresh process per graph (see training.onnx_export).
    graph = steps.add_parser("export-graph")
    graph.add_argument("task", choices=TASKS)
    graph.add_argument("graph")
    graph.add_argument("run_dir", type=Path)
    graph.add_argument("path", type=Path)
    graph.add_argument("--ensemble-with", type=Path, action="append", default=[])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.step == "export-graph":
        task_export = import_module(f"training.{args.task}.export")
        if args.graph not in getattr(task_export, "GRAPHS", {}):
            raise SystemExit(f"{args.task} has no graph {args.graph!r} to export in its own process")
        if args.ensemble_with and args.task != "translate":
            raise SystemExit(f"{args.task}'s graphs are exported one run at a time (no --ensemble-with)")
        members = {"ensemble_with": args.ensemble_with} if args.ensemble_with else {}
        task_export.export_graph(args.run_dir, args.graph, args.path, **members)
        return 0

    if args.step == "recover":
        from training.recover import recover
        model_dir = args.model_dir or newest_model_dir(models_dir() / args.task)
        run_dir = args.run_dir or runs_dir() / args.task / f"recovered-{Manifest.load(model_dir).version}"
        print(json.dumps(recover(args.task, model_dir, run_dir), indent=2))
        return 0
    config = load_config(args.task, args.profile, args.overrides)
    run_dir = getattr(args, "run_dir", None) or runs_dir() / args.task / args.profile
    step = import_module(f"training.{args.task}.{'evaluate' if args.step == 'quantize' else args.step}")
    if args.step == "data":
        print(json.dumps(step.prepare(config), indent=2))
    elif args.step == "train":
        result = step.train(config, run_dir, resume=args.resume, device=args.device, progress=not args.no_progress)
        print(json.dumps(result, indent=2))
    elif args.step == "export":
        export(args, step, run_dir)
    elif args.step == "quantize":
        model_dir = args.model_dir or newest_model_dir(models_dir() / args.task)
        variant = add_int8(model_dir, step.evaluate, step.QUALITY).precisions["int8"]
        print(json.dumps({"model_dir": str(model_dir), "int8": variant.quality, "servable": variant.servable,
                          "reason": variant.reason}, indent=2))
    elif args.step == "evaluate":
        model_dir = args.model_dir or newest_model_dir(models_dir() / args.task)
        if args.record and (args.limit or args.precision != "fp32" or args.split != "test"):
            raise SystemExit("--record writes the fp32 figures of the whole test split: no --limit, --precision, "
                             "--split")
        if args.split != "test" and args.task != "translate":
            raise SystemExit(f"--split is for translate; {args.task} is chosen on its validation split in training")
        split = {"split": args.split} if args.split != "test" else {}
        metrics = step.evaluate(model_dir, limit=args.limit, precision=args.precision, **split)
        if args.record:
            manifest = Manifest.load(model_dir)
            manifest.metrics |= metrics
            manifest.save(model_dir)
        if args.json:
            print(json.dumps(metrics, indent=2))
        else:
            for key, value in metrics.items():
                print(f"{key}: {value}")
    return 0


def export(args: argparse.Namespace, task_export, run_dir: Path) -> None:
    """Pick the version (refusing an existing one before any work), export, say what is served."""
    if args.ensemble_with and args.task not in ("sentiment", "translate"):
        raise SystemExit("--ensemble-with is for sentiment and translate only")
    if args.candidate:
        if args.task not in ("translate", "music"):
            raise SystemExit("--candidate is for translate and music only")
        served_from = models_dir().resolve()
        if args.model_dir is None or args.model_dir.resolve().is_relative_to(served_from):
            raise SystemExit(f"a candidate has no test metrics and must not be served: pass a --model-dir outside "
                             f"{served_from}")
    if args.model_dir:
        model_dir = args.model_dir.absolute()
        version = args.version or model_dir.name
    else:
        if args.profile == "smoke" and not args.force and "SEQSERVE_MODELS_DIR" not in os.environ:
            raise SystemExit("a smoke model exported into the repository's models/ would become the version the "
                             "service serves: pass --model-dir or SEQSERVE_MODELS_DIR (or --force to do it anyway)")
        version = args.version or next_version(models_dir() / args.task)
        model_dir = models_dir() / args.task / version

    def refused(error: VersionExists) -> SystemExit:
        hint = "" if args.model_dir else \
            f" Or leave out --version to write the next free version, {next_version(model_dir.parent)}."
        return SystemExit(f"{error}{hint}")

    try:
        check_target(model_dir, args.force)  # before any work
    except VersionExists as error:
        raise refused(error) from None
    replacing = model_dir.exists()
    print(f"exporting {args.task} version {version} to {model_dir}"
          + (" (replacing the version there, --force)" if replacing else ""), flush=True)
    extra = ({"ensemble_with": args.ensemble_with} if args.ensemble_with else {}) | \
        ({"candidate": True} if args.candidate else {})
    try:
        task_export.export(run_dir, model_dir, version=version, force=args.force, **extra)
    except VersionExists as error:  # appeared while exporting
        raise refused(error) from None
    print(f"wrote {args.task} version {version} to {model_dir}" + (" (replaced the old one)" if replacing else ""))
    if args.candidate:
        print(f"a candidate, not evaluated on the test split: `python -m training evaluate {args.task} --split "
              f"validation --model-dir {model_dir}`")
        return
    served = newest_version_dir(model_dir.parent)
    if served is not None and served.resolve() == model_dir.resolve():
        print(f"the service serves the highest version of each task: this one, {args.task}/{served.name} "
              f"under {model_dir.parent} (a running service picks it up when restarted)")
    else:
        print(f"note: the service serves the highest version of each task, which under {model_dir.parent} "
              f"is {served.name if served else 'none'}, not this one")


if __name__ == "__main__":
    sys.exit(main())
