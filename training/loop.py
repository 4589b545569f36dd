"""The training loop every task uses (sentiment's language-model pretraining too).

A task builds its model and optimizer and hands the loop a `Steps` object: its hooks for
what differs (the batches of an epoch, the loss of one batch, validation, the history entry,
anything at an epoch's start). The loop does the rest alike for every task:

- epochs until `max_epochs`, `patience` epochs without a better validation metric (early
  stopping, in the metric's direction) or the time budget (`max_seconds`: it stops after
  the epoch that passes it);
- each step: zero the gradients, backpropagate, clip the global norm, step, update the EMA
  of the weights where one is kept (then the EMA is what is validated and exported);
- after an epoch without gain, the learning rate times `lr_decay_on_plateau` (kept in the
  optimizer's state, so a resumed run continues the same schedule);
- checkpoints every epoch in one format (`training.checkpoints`): `last.pt` for --resume,
  `best.pt` for export; `resume()` restores weights, optimizer, EMA, RNG states and history,
  so a resumed run continues exactly as an uninterrupted one would;
- `training.json` after every epoch: history, timing, hardware, why it stopped (also when
  interrupted by Ctrl-C or SIGTERM: "interrupted after epoch N");
- progress: a tqdm bar on a terminal, plain lines in a log (`progress`), one line per epoch.
"""

from __future__ import annotations

import io
import json
import platform
import random
import signal
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from training import checkpoints

SUMMARY = "training.json"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, while the loop runs (in the main
    thread only, where Python delivers signals), so that a run stopped by `kill` records why."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda asked for, but torch sees no CUDA device")
    return torch.device(name)


def hardware_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads"


def start_run(seed: int, run_dir: Path, device: str, resume_from: Path | None = None) -> torch.device:
    """Seed every generator, make the run folder and pick the device; with --resume
    (`resume_from`), refuse at once if that checkpoint is not there."""
    seed_everything(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_from is not None and not resume_from.is_file():
        raise SystemExit(f"--resume: no checkpoint at {resume_from}")
    return resolve_device(device)


class _Lines(io.TextIOBase):
    """What tqdm writes, as plain lines: each refresh one line, for logs rather than terminals."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable, description: str, enabled: bool = True, stream=None) -> tqdm:
    """A tqdm bar on a terminal; where the stream is not one (a log, a pipe), a plain line
    every 30 s and one at the end; nothing when not `enabled`."""
    stream = stream or sys.stderr
    if not enabled:
        return tqdm(iterable, disable=True)
    if stream.isatty():
        return tqdm(iterable, desc=description, file=stream)
    return tqdm(iterable, desc=description, file=_Lines(stream), mininterval=30,
                bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]")


class Steps(ABC):
    """A task's part of the loop. Each epoch the loop calls `on_epoch_start`, `batches`,
    `loss` for each batch, `validate` and `record`, in that order."""

    metric: str                 # the validation metric early stopping and best.pt follow
    higher_is_better: bool
    decimals = 5                # of the validation metrics in the history

    def on_epoch_start(self, epoch: int) -> None:
        """Before the epoch's batches are drawn (e.g. to anneal the learning rate)."""

    @abstractmethod
    def batches(self, epoch: int) -> Sequence[Any]:
        """The epoch's batches, drawn from a generator seeded by the epoch, so that a resumed
        run sees the batches an uninterrupted one would."""

    @abstractmethod
    def loss(self, batch: Any) -> tuple[torch.Tensor, int] | None:
        """The batch's mean loss and over how many items (examples, tokens); None skips it."""

    @abstractmethod
    def validate(self, model: nn.Module) -> dict[str, float]:
        """Metrics on the validation set, of `model` (the EMA average where one is kept)."""

    def record(self, train_loss: float, validation: dict[str, float]) -> dict[str, Any]:
        """The epoch's entry in the history, between its "epoch" and its "seconds"."""
        return {"train_loss": round(train_loss, 5),
                "validation": {key: round(value, self.decimals) for key, value in validation.items()}}

    def postfix(self, train_loss: float) -> dict[str, str]:
        """What the progress bar shows beside the count."""
        return {"loss": f"{train_loss:.4f}"}


class Loop:
    """Trains `model` with `optimizer` in `run_dir` (see the module's note).

    `saved` goes into every checkpoint (e.g. model_args and config, for export). The summary
    (`summary`, None: none) holds `summary_fields` as given to this run, and `facts`, which
    are kept in the checkpoint's state, so a resumed run reports what its start found.
    `patience` None: no early stopping; `best` None: no best checkpoint; `keep_epochs`: also
    every epoch's validated weights (`checkpoints.epoch_path`), to choose an epoch by more
    than the validation metric afterwards. `select_best` False: a refit, trained on the
    validation split too for a number of epochs chosen before, so no epoch is chosen by it:
    no early stopping, and `best` holds each epoch's weights (at the end, the last epoch's)."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: Path, device: torch.device, *,
                 max_epochs: int, clip_grad_norm: float, patience: int | None = None, max_seconds: float = 0,
                 ema_decay: float = 0.0, lr_decay_on_plateau: float = 1.0, checkpoint: str = checkpoints.LAST,
                 best: str | None = checkpoints.BEST, keep_epochs: bool = False, summary: str | None = SUMMARY,
                 saved: dict[str, Any] | None = None, summary_fields: dict[str, Any] | None = None,
                 facts: dict[str, Any] | None = None, label: str = "epoch", show_progress: bool = True,
                 select_best: bool = True):
        self.model, self.optimizer, self.run_dir, self.device = model, optimizer, Path(run_dir), device
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.select_best = select_best
        self.max_epochs, self.patience, self.max_seconds = max_epochs, patience if select_best else None, max_seconds
        self.clip_grad_norm, self.lr_decay_on_plateau = clip_grad_norm, lr_decay_on_plateau
        self.checkpoint, self.best, self.summary = checkpoint, best, summary
        self.keep_epochs = keep_epochs
        self.saved, self.summary_fields = saved or {}, summary_fields or {}
        self.label, self.show_progress = label, show_progress
        # An exponential moving average of the weights smooths the step-to-step noise that
        # makes a small validation set pick a lucky epoch; it is what gets validated and exported.
        self.averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay)) if ema_decay else None
        self.evaluated = self.averaged.module if self.averaged is not None else model
        self.state: dict[str, Any] = {"epoch": 0, "best_score": float("-inf"), "best_epoch": 0, "bad_epochs": 0,
                                      "history": [], "seconds": 0.0, "facts": dict(facts or {})}

    @classmethod
    def from_config(cls, config: Any, model: nn.Module, optimizer: torch.optim.Optimizer, run_dir: Path,
                    device: torch.device, model_args: dict[str, Any], examples: tuple[int, int], resume: bool,
                    show_progress: bool, **options: Any) -> Loop:
        """A task's loop as its config's [train] section says (max_epochs, patience,
        max_seconds, clip_grad_norm), saving the model's arguments and the config in every
        checkpoint, and the numbers of training and validation examples in the summary;
        resumed from the last checkpoint if `resume`."""
        settings = config.train
        loop = cls(model, optimizer, run_dir, device, max_epochs=settings.max_epochs, patience=settings.patience,
                   max_seconds=settings.max_seconds, clip_grad_norm=settings.clip_grad_norm,
                   saved={"model_args": model_args, "config": config.model_dump()},
                   summary_fields={"train_examples": examples[0], "validation_examples": examples[1]},
                   show_progress=show_progress, **options)
        if resume:
            loop.resume()
        return loop

    def resume(self, what: str = "") -> None:
        """Continue from the last checkpoint: weights, EMA, optimizer, RNG states, history."""
        path = self.run_dir / self.checkpoint
        checkpoint = checkpoints.load_resumable(path, self.device)
        trained = checkpoint["trained_model"]
        self.model.load_state_dict(checkpoint["model"] if trained is None else trained)
        if self.averaged is not None:
            self.averaged.module.load_state_dict(checkpoint["model"])
            self.averaged.n_averaged.fill_(checkpoint["ema_updates"] or 0)
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.state = checkpoint["state"]
        checkpoints.set_rng_state(checkpoint["rng"])
        print(f"resumed {what + ' ' if what else ''}from {path} after epoch {self.state['epoch']}", flush=True)

    def running(self) -> bool:
        state = self.state
        return (state["epoch"] < self.max_epochs
                and (self.patience is None or state["bad_epochs"] < self.patience)
                and not (self.max_seconds and state["seconds"] >= self.max_seconds))

    def fit(self, steps: Steps) -> dict[str, Any]:
        """Train until a stopping rule says so; returns the summary without the history. A run
        interrupted (Ctrl-C, or SIGTERM as `kill` sends it) says so in training.json, then
        re-raises; `--resume` continues from its last checkpoint."""
        try:
            with sigterm_as_interrupt():
                return self._fit(steps)
        except KeyboardInterrupt:
            self.write_summary(finished=False, stopped=f"interrupted after epoch {self.state['epoch']}")
            raise

    def _fit(self, steps: Steps) -> dict[str, Any]:
        state = self.state
        while self.running():
            epoch = state["epoch"] + 1
            started = time.perf_counter()
            steps.on_epoch_start(epoch)
            self.model.train()
            bar = progress(steps.batches(epoch), f"{self.label} {epoch}/{self.max_epochs}", self.show_progress)
            total, seen = 0.0, 0
            for batch in bar:
                step = steps.loss(batch)
                if step is None:
                    continue
                loss, count = step
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # Exploding gradients: clip the global norm before each step.
                nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_grad_norm)
                self.optimizer.step()
                if self.averaged is not None:
                    self.averaged.update_parameters(self.model)
                total, seen = total + loss.item() * count, seen + count
                bar.set_postfix(steps.postfix(total / seen), refresh=False)
            validation = steps.validate(self.evaluated)
            bar.close()
            elapsed = time.perf_counter() - started
            record = {"epoch": epoch, **steps.record(total / max(seen, 1), validation), "seconds": round(elapsed, 1)}
            state["seconds"] += elapsed
            state["epoch"] = epoch
            state["history"].append(record)
            score = validation[steps.metric] if steps.higher_is_better else -validation[steps.metric]
            improved = score > state["best_score"] or not self.select_best
            if improved:
                state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            else:
                state["bad_epochs"] += 1
                if self.lr_decay_on_plateau != 1.0:
                    for group in self.optimizer.param_groups:
                        group["lr"] *= self.lr_decay_on_plateau
            checkpoint = self.checkpoint_now(epoch, validation)
            if improved and self.best:
                checkpoints.save(self.run_dir / self.best, checkpoint)
            checkpoints.save(self.run_dir / self.checkpoint, checkpoint)
            if self.keep_epochs:
                checkpoints.save(checkpoints.epoch_path(self.run_dir, epoch), checkpoints.weights_only(checkpoint))
            tqdm.write(self.epoch_line(record, improved))
            self.write_summary(finished=False)
        return self.write_summary(finished=True)

    def checkpoint_now(self, epoch: int, validation: dict[str, float]) -> dict[str, Any]:
        ema = self.averaged is not None
        return {"epoch": epoch, "model": self.evaluated.state_dict(),
                "trained_model": self.model.state_dict() if ema else None,
                "ema_updates": int(self.averaged.n_averaged) if ema else None,
                "optimizer": self.optimizer.state_dict(), "rng": checkpoints.rng_state(), "state": self.state,
                "validation": validation, **self.saved}

    def epoch_line(self, record: dict[str, Any], improved: bool) -> str:
        parts = [f"{key} " + (", ".join(f"{k} {v}" for k, v in value.items()) if isinstance(value, dict) else f"{value}")
                 for key, value in record.items() if key not in ("epoch", "seconds")]
        line = f"{self.label} {record['epoch']}: {', '.join(parts)}; {record['seconds']} s"
        if not self.select_best:
            return line + " (refit: kept)"
        if self.best is None and self.patience is None:
            return line
        if improved:
            return line + " (best)"
        decayed = f"; lr -> {self.optimizer.param_groups[0]['lr']:.2g}" if self.lr_decay_on_plateau != 1.0 else ""
        return line + f" (no gain for {self.state['bad_epochs']}{decayed})"

    def stopped(self) -> str:
        state = self.state
        if self.patience is not None and state["bad_epochs"] >= self.patience:
            return "early stopping"
        if self.max_seconds and state["seconds"] >= self.max_seconds:
            return "time budget"
        return "max_epochs"

    def write_summary(self, finished: bool, stopped: str = "running") -> dict[str, Any]:
        """training.json (when the loop has a summary): history, timing, hardware, why it
        stopped; returned without the history."""
        state = self.state
        best = state["history"][state["best_epoch"] - 1].get("validation") if state["best_epoch"] else None
        summary = {
            "device": self.device.type, "hardware": hardware_description(self.device),
            "torch_version": torch.__version__, "seconds": round(state["seconds"], 1),
            "epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "best_validation": best,
            "stopped": self.stopped() if finished else stopped,
            **self.summary_fields, **state["facts"],
            "history": state["history"],
        }
        if self.summary:
            (self.run_dir / self.summary).write_text(json.dumps(summary, indent=2) + "\n")
        return {key: value for key, value in summary.items() if key != "history"}
