"""The one training loop: early stopping in the metric's direction, the time budget, the
learning-rate decay on a plateau, best and last checkpoints in one format, progress as plain
lines off a terminal, and --resume continuing exactly as an uninterrupted run (a scripted
toy task, then a smoke-profile sentiment run)."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training import checkpoints  # noqa: E402
from training.loop import Loop, Steps, progress, seed_everything  # noqa: E402


class Toy(Steps):
    """A linear model fitted to random batches (drawn from all three generators, and through
    dropout, so that resuming must restore every RNG state); its validation metric is
    scripted, epoch by epoch, when a script is given."""

    metric = "score"

    def __init__(self, model: torch.nn.Module, scores: list[float] | None = None, higher_is_better: bool = True):
        self.model, self.scores, self.higher_is_better = model, scores, higher_is_better

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self, epoch: int) -> list[torch.Tensor]:
        return [torch.randn(8, 4) * random.random() + float(np.random.rand()) for _ in range(3)]

    def loss(self, batch: torch.Tensor) -> tuple[torch.Tensor, int]:
        return (self.model(batch) - batch.sum(dim=1, keepdim=True)).pow(2).mean(), len(batch)

    def validate(self, model: torch.nn.Module) -> dict[str, float]:
        if self.scores is not None:
            return {"score": self.scores[self.epoch - 1]}
        with torch.no_grad():
            return {"score": -float(model(torch.ones(1, 4)).sum())}


def toy_loop(run_dir, max_epochs: int = 6, **options) -> Loop:
    seed_everything(0)
    model = torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(4, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    return Loop(model, optimizer, run_dir, torch.device("cpu"), max_epochs=max_epochs, clip_grad_norm=1.0,
                show_progress=False, saved={"model_args": {}, "config": {}}, **options)


def test_patience_stops_early_and_keeps_the_best(tmp_path):
    loop = toy_loop(tmp_path, patience=3)
    summary = loop.fit(Toy(loop.model, [0.5, 0.6, 0.55, 0.58, 0.59, 0.7]))
    assert summary["stopped"] == "early stopping" and summary["epochs_run"] == 5 and summary["best_epoch"] == 2
    assert summary["best_validation"] == {"score": 0.6}
    assert checkpoints.load(tmp_path / "best.pt")["epoch"] == 2 and checkpoints.load(tmp_path / "last.pt")["epoch"] == 5
    written = json.loads((tmp_path / "training.json").read_text())
    assert [r["validation"]["score"] for r in written["history"]] == [0.5, 0.6, 0.55, 0.58, 0.59]
    assert {"hardware", "torch_version", "seconds"} <= set(written)


def test_a_lower_is_better_metric_stops_and_decays_the_learning_rate_on_its_plateaus(tmp_path):
    loop = toy_loop(tmp_path, patience=2, lr_decay_on_plateau=0.5)
    summary = loop.fit(Toy(loop.model, [3.0, 2.0, 2.5, 1.9, 1.95, 2.1], higher_is_better=False))
    assert summary["stopped"] == "early stopping" and summary["epochs_run"] == 6 and summary["best_epoch"] == 4
    assert loop.optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)  # after epochs 3, 5 and 6
    assert checkpoints.load(tmp_path / "last.pt")["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.0125)


def test_a_refit_chooses_no_epoch_it_runs_them_all_and_keeps_the_last(tmp_path):
    loop = toy_loop(tmp_path, max_epochs=4, patience=1, select_best=False)
    summary = loop.fit(Toy(loop.model, [0.9, 0.5, 0.4, 0.3]))
    assert summary["stopped"] == "max_epochs" and summary["epochs_run"] == 4 and summary["best_epoch"] == 4
    assert checkpoints.load(tmp_path / "best.pt")["epoch"] == 4


def test_the_time_budget_stops_after_the_epoch_that_passes_it(tmp_path):
    loop = toy_loop(tmp_path, patience=3, max_seconds=1e-9)
    summary = loop.fit(Toy(loop.model))
    assert summary["stopped"] == "time budget" and summary["epochs_run"] == 1


def test_best_and_last_are_one_format_with_the_ema_as_the_validated_weights(tmp_path):
    loop = toy_loop(tmp_path, max_epochs=2, ema_decay=0.5)
    loop.fit(Toy(loop.model))
    best, last = checkpoints.load(tmp_path / "best.pt"), checkpoints.load(tmp_path / "last.pt")
    assert set(best) == set(last) >= {"format", "epoch", "model", "trained_model", "ema_updates", "optimizer", "rng",
                                      "state", "validation", "model_args", "config"}
    assert set(last["rng"]) == {"python", "numpy", "torch", "cuda"} and last["ema_updates"] == 6
    assert not torch.equal(last["model"]["1.weight"], last["trained_model"]["1.weight"])
    assert torch.equal(last["model"]["1.weight"], loop.evaluated[1].weight.detach())


def test_kept_epochs_hold_each_epochs_validated_weights_and_no_resume_state(tmp_path):
    loop = toy_loop(tmp_path, max_epochs=3, ema_decay=0.5, keep_epochs=True)
    loop.fit(Toy(loop.model))
    kept = [checkpoints.load(checkpoints.epoch_path(tmp_path, epoch)) for epoch in (1, 2, 3)]
    assert [k["epoch"] for k in kept] == [1, 2, 3]
    assert set(kept[0]) == {"format", "epoch", "model", "validation", "model_args", "config"}
    assert torch.equal(kept[2]["model"]["1.weight"], checkpoints.load(tmp_path / "last.pt")["model"]["1.weight"])
    assert not torch.equal(kept[0]["model"]["1.weight"], kept[2]["model"]["1.weight"])
    # none kept unless asked
    plain = toy_loop(tmp_path / "plain", max_epochs=1)
    plain.fit(Toy(plain.model))
    assert not (tmp_path / "plain" / "epochs").exists()


@pytest.mark.parametrize("ema_decay", [0.0, 0.5])
def test_resume_continues_exactly_as_an_uninterrupted_run(tmp_path, ema_decay):
    whole = toy_loop(tmp_path / "whole", max_epochs=4, ema_decay=ema_decay)
    whole.fit(Toy(whole.model))
    first = toy_loop(tmp_path / "resumed", max_epochs=2, ema_decay=ema_decay)
    first.fit(Toy(first.model))
    random.random(), np.random.rand(), torch.rand(3)  # whatever happens in between
    second = toy_loop(tmp_path / "resumed", max_epochs=4, ema_decay=ema_decay)
    second.resume()
    second.fit(Toy(second.model))
    a, b = (checkpoints.load(tmp_path / run / "last.pt") for run in ("whole", "resumed"))
    for key in ("model", "trained_model") if ema_decay else ("model",):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key])
    drop_seconds = [{k: v for k, v in r.items() if k != "seconds"} for r in a["state"]["history"]]
    assert drop_seconds == [{k: v for k, v in r.items() if k != "seconds"} for r in b["state"]["history"]]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["python"] == b["rng"]["python"]


def test_resume_refuses_a_checkpoint_of_an_older_format(tmp_path):
    torch.save({"model": {}, "state": {}}, tmp_path / "last.pt")
    with pytest.raises(SystemExit, match="before the current checkpoint format"):
        toy_loop(tmp_path).resume()


def test_progress_writes_plain_lines_where_the_stream_is_no_terminal():
    stream = io.StringIO()
    bar = progress(range(3), "epoch 1/2", stream=stream)
    for _ in bar:
        bar.set_postfix(loss="0.5000", refresh=False)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and lines and all(line.startswith("epoch 1/2: ") for line in lines)
    assert lines[-1].startswith("epoch 1/2: 3/3") and "loss=0.5000" in lines[-1]
    silent = io.StringIO()
    list(progress(range(3), "epoch 1/2", enabled=False, stream=silent))
    assert silent.getvalue() == ""


@pytest.mark.slow
def test_a_smoke_run_resumed_after_one_epoch_equals_two_epochs_in_one_go(data_cache, tmp_path):
    """On the sentiment smoke profile (EMA, oversampling, dropout): one epoch, then --resume
    for the second, ends with the same weights, EMA, history and RNG states as two epochs."""
    from training.config import load_config
    from training.sentiment.train import train

    overrides = ["pretrain.epochs=0", "train.patience=5", "train.oversample={rotten_tomatoes = 2}"]
    two = load_config("sentiment", "smoke", overrides + ["train.max_epochs=2"])
    train(two, tmp_path / "whole", progress=False)
    train(load_config("sentiment", "smoke", overrides + ["train.max_epochs=1"]), tmp_path / "resumed", progress=False)
    train(two, tmp_path / "resumed", resume=True, progress=False)
    a, b = (checkpoints.load(tmp_path / run / "last.pt") for run in ("whole", "resumed"))
    assert a["epoch"] == b["epoch"] == 2
    for key in ("model", "trained_model"):
        assert all(torch.equal(a[key][name], b[key][name]) for name in a[key])
    history = [json.loads((tmp_path / run / "training.json").read_text())["history"] for run in ("whole", "resumed")]
    assert [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in history][0] == \
        [{k: v for k, v in r.items() if k != "seconds"} for r in history[1]]
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


class Interrupted(Toy):
    """Toy, with SIGTERM sent to this process in the given epoch's first batch."""

    def __init__(self, model, epoch: int):
        super().__init__(model)
        self.stop_in = epoch

    def loss(self, batch):
        if self.epoch == self.stop_in:
            import os
            import signal

            os.kill(os.getpid(), signal.SIGTERM)
        return super().loss(batch)


def test_a_run_stopped_by_a_signal_says_so_and_resumes(tmp_path):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    loop = toy_loop(tmp_path, max_epochs=4)
    with pytest.raises(KeyboardInterrupt):
        loop.fit(Interrupted(loop.model, epoch=3))
    summary = json.loads((tmp_path / "training.json").read_text())
    assert summary["stopped"] == "interrupted after epoch 2" and summary["epochs_run"] == 2
    assert checkpoints.load(tmp_path / "last.pt")["epoch"] == 2
    assert signal.getsignal(signal.SIGTERM) is before, "the handler is put back"
    resumed = toy_loop(tmp_path, max_epochs=4)
    resumed.resume()
    assert resumed.fit(Toy(resumed.model))["stopped"] == "max_epochs"
