"""The one checkpoint format: what `last.pt` (every epoch, for --resume), `best.pt` (the best
validation, for export) and sentiment's `pretrain.pt` hold alike.

    format         FORMAT
    epoch          epochs done
    model          the weights that were validated: the EMA average where one is kept, else the
                   trained weights (what export loads)
    trained_model  the trained weights, where they differ from `model` (EMA); else None
    ema_updates    how many steps the EMA has averaged (None without EMA)
    optimizer      the optimizer's state, learning rates included (decays live there)
    rng            python, numpy, torch (and CUDA) generator states
    state          the loop's state: best score and epoch, epochs without gain, seconds,
                   history, and the run's facts for its summary
    validation     that epoch's validation metrics
    model_args, config   how to rebuild the model, and the config it was trained with

Export reads `model`, `model_args` and `config`, which checkpoints written before this
format also hold, so their runs still export; resuming needs this format.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = 2
LAST, BEST = "last.pt", "best.pt"
EPOCHS = "epochs"  # a run's kept epochs (train.keep_epochs): epochs/epoch-NN.pt, weights only


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def save(path: Path, checkpoint: dict[str, Any]) -> None:
    """Write whole or not at all: an interrupted save leaves the previous checkpoint."""
    partial = path.with_name(path.name + ".partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": FORMAT, **checkpoint}, partial)
    os.replace(partial, path)


def epoch_path(run_dir: Path, epoch: int) -> Path:
    return Path(run_dir) / EPOCHS / f"epoch-{epoch:02d}.pt"


def kept_epochs(run_dir: Path) -> dict[int, Path]:
    """The epochs a run kept (`epoch_path`'s files), by number, in order."""
    return {int(path.stem.removeprefix("epoch-")): path
            for path in sorted((Path(run_dir) / EPOCHS).glob("epoch-*.pt"))}


def weights_only(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """What export needs of a checkpoint (the validated weights, model_args, config, epoch and
    validation), without the optimizer, generator and trained-weight state only resuming reads:
    a quarter of the size for an Adam-trained LSTM."""
    return {key: checkpoint[key] for key in ("epoch", "model", "validation", "model_args", "config")
            if key in checkpoint}


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    if not path.is_file():
        raise SystemExit(f"no checkpoint at {path}")
    return torch.load(path, map_location=device, weights_only=False)


def load_resumable(path: Path, device: torch.device) -> dict[str, Any]:
    checkpoint = load(path, device)
    if "recovered_from" in checkpoint:
        raise SystemExit(f"{path} was recovered from {checkpoint['recovered_from']}'s graphs and cannot be resumed: "
                         f"a graph holds no optimizer or generator state (it exports, joins ensembles, and starts "
                         f"a sentiment run through train.init_from)")
    if checkpoint.get("format") != FORMAT:
        raise SystemExit(f"{path} was written before the current checkpoint format and cannot be resumed; "
                         f"train again without --resume (its best.pt still exports)")
    return checkpoint


def load_best(run_dir: Path, model_class: type[torch.nn.Module]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The run's best checkpoint as a model in eval mode on the CPU, and the checkpoint."""
    checkpoint = load(Path(run_dir) / BEST)
    model = model_class(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def init_run_dir(init_from: str, repo_root: Path) -> Path:
    """The run folder `train.init_from` names (relative paths from the repository root, where
    `runs/` is by default), checked before any work: it must hold best weights and a tokenizer."""
    run_dir = Path(init_from) if Path(init_from).is_absolute() else repo_root / init_from
    missing = [name for name in (BEST, "tokenizer.json") if not (run_dir / name).is_file()]
    if missing:
        raise SystemExit(f"train.init_from: {run_dir} has no {' and no '.join(missing)}: train that run first "
                         "(or --set train.init_from=<its folder>)")
    return run_dir


def load_weights_from(model: torch.nn.Module, run_dir: Path) -> None:
    """Fine-tuning: start `model` from another run's best weights, which must be this network."""
    try:
        model.load_state_dict(load(run_dir / BEST)["model"])
    except RuntimeError as error:  # another size or shape: say so, not a traceback
        raise SystemExit(f"train.init_from: {run_dir}'s weights do not fit this run's network: {error}") from None
