"""`python -m training <step> <task> [options]`: the training pipeline's command line.

    python -m training data sentiment             fetch, clean and split the data (cache)
    python -m training train sentiment            train (checkpoint every epoch; --resume)
    python -m training export sentiment           export to ONNX under models/, checked
    python -m training evaluate sentiment --json  evaluate the exported ONNX model

Tasks: sentiment, music, translate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from training.config import REPO_ROOT, load_config, runs_dir

TASKS = ("sentiment", "music", "translate")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = parser.add_subparsers(dest="step", required=True)

    def add(step: str, help_text: str) -> argparse.ArgumentParser:
        sub = steps.add_parser(step, help=help_text)
        sub.add_argument("task", choices=TASKS)
        sub.add_argument("--profile", default="full", help="config profile: smoke or full (default)")
        sub.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override one config value, e.g. --set train.learning_rate=0.001")
        return sub

    add("data", "fetch the pinned artifact, clean, deduplicate, split")

    train = add("train", "train a model; writes checkpoints under runs/<task>/<profile>/")
    train.add_argument("--run-dir", type=Path, help="where checkpoints go (default runs/<task>/<profile>)")
    train.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run dir")
    train.add_argument("--device", default="auto", help="auto (CUDA if available), cpu or cuda")
    train.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs one line per epoch)")

    export = add("export", "export the best checkpoint to ONNX and write the model version")
    export.add_argument("--run-dir", type=Path)
    export.add_argument("--model-dir", type=Path, help="output (default models/<task>/<version>)")
    export.add_argument("--version", default="1")
    export.add_argument("--ensemble-with", type=Path, action="append", default=[], metavar="RUN_DIR",
                        help="sentiment: average in this run's best checkpoint too (same tokenizer; repeatable)")

    evaluate = add("evaluate", "evaluate an exported model on the test split")
    evaluate.add_argument("--model-dir", type=Path, help="default: the newest version under models/<task>/")
    evaluate.add_argument("--limit", type=int, default=0, help="only the first N test examples (sentiment: of each source)")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")

    args = parser.parse_args(argv)
    config = load_config(args.task, args.profile, args.overrides)
    run_dir = getattr(args, "run_dir", None) or runs_dir() / args.task / args.profile

    if args.step == "data":
        from importlib import import_module

        print(json.dumps(import_module(f"training.data.{args.task}").prepare(config), indent=2))
    elif args.step == "train":
        from training import train

        result = getattr(train, f"train_{args.task}")(config, run_dir, resume=args.resume, device=args.device,
                                 progress=not args.no_progress)
        print(json.dumps(result, indent=2))
    elif args.step == "export":
        from training import export

        model_dir = args.model_dir or REPO_ROOT / "models" / args.task / args.version
        if args.ensemble_with and args.task != "sentiment":
            raise SystemExit("--ensemble-with is for sentiment only")
        extra = {"ensemble_with": args.ensemble_with} if args.ensemble_with else {}
        getattr(export, f"export_{args.task}")(run_dir, model_dir, version=args.version, **extra)
        print(f"wrote {model_dir}")
    elif args.step == "evaluate":
        from training import evaluate

        model_dir = args.model_dir or evaluate.newest_model_dir(REPO_ROOT / "models" / args.task)
        metrics = getattr(evaluate, f"evaluate_{args.task}")(model_dir, limit=args.limit)
        if args.json:
            print(json.dumps(metrics, indent=2))
        else:
            for key, value in metrics.items():
                print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
