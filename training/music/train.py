"""Music training: truncated backpropagation through time in the one loop (`training.loop`).

The tunes are cut into `batch_size` streams read side by side in windows of
`sequence_length`; the LSTM state carries from one window to the next (detached, so the
gradients stop at the window's edge). Each epoch also reads `transposed_copies` copies of
every tune moved to another key, drawn afresh per epoch (the augmentation). Validated by
cross-entropy in nats per character; the learning rate halves after an epoch without gain."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from seqserve.bar_clock import BarClock
from seqserve.characters import CharVocabulary
from training import checkpoints
from training.batching import subsample
from training.loop import Loop, Steps, progress, start_run
from training.music import data
from training.music.config import Config
from training.music.model import CharLSTM
from training.music.transpose import transpositions

VOCABULARY_FILE = "vocabulary.json"


def streams(ids: np.ndarray, batch: int) -> torch.Tensor:
    """One long id sequence -> [batch, N]: `batch` contiguous streams read side by side."""
    length = len(ids) // batch
    return torch.from_numpy(ids[: length * batch].reshape(batch, length))


def text_inputs(vocabulary: CharVocabulary, text: str) -> tuple[np.ndarray, np.ndarray]:
    """A cleaned text's character ids and its bar clock after each character."""
    return vocabulary.encode(text), BarClock().read_text(text)


@torch.no_grad()
def stream_loss(model: CharLSTM, ids: np.ndarray, clocks: np.ndarray, device: torch.device, batch: int = 8,
                window: int = 200) -> float:
    """Cross-entropy in nats per character over a text, state carried across windows."""
    model.eval()
    data_, clock_data = streams(ids, batch).to(device), streams(clocks, batch).to(device)
    h, c = model.initial_state(batch, device)
    total, count = 0.0, 0
    for start in range(0, data_.shape[1] - 1, window):
        inputs, targets = data_[:, start : start + window], data_[:, start + 1 : start + window + 1]
        width = targets.shape[1]
        logits, h, c = model(inputs[:, :width], clock_data[:, start : start + width], h, c)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="sum").item()
        count += targets.numel()
    return total / count


class MusicSteps(Steps):
    """Each epoch: the training tunes and fresh transposed copies, shuffled, as streams; a
    batch is one window of them, read with the state the previous window left."""

    metric, higher_is_better = "loss_nats_per_char", False

    def __init__(self, model: CharLSTM, vocabulary: CharVocabulary, tunes: list[dict[str, Any]],
                 variants: list[list[str]], validation: tuple[np.ndarray, np.ndarray], config: Config,
                 device: torch.device):
        self.model, self.vocabulary, self.tunes, self.variants = model, vocabulary, tunes, variants
        self.validation, self.settings, self.device = validation, config.train, device

    def batches(self, epoch: int) -> range:
        settings = self.settings
        rng = random.Random(settings.seed + epoch)
        order = list(self.tunes)
        for tune_variants in self.variants:
            order += [{"abc": v} for v in rng.sample(tune_variants, min(settings.transposed_copies, len(tune_variants)))]
        rng.shuffle(order)
        ids, clocks = text_inputs(self.vocabulary, data.tunes_text(order))
        self.data = streams(ids, settings.batch_size).to(self.device)
        self.clocks = streams(clocks, settings.batch_size).to(self.device)
        self.hidden = self.model.initial_state(settings.batch_size, self.device)
        return range(0, self.data.shape[1] - 1, settings.sequence_length)

    def loss(self, start: int) -> tuple[torch.Tensor, int]:
        targets = self.data[:, start + 1 : start + self.settings.sequence_length + 1]
        width = targets.shape[1]
        logits, h, c = self.model(self.data[:, start : start + width], self.clocks[:, start : start + width], *self.hidden)
        self.hidden = h.detach(), c.detach()
        return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)), targets.numel()

    def validate(self, model: nn.Module) -> dict[str, float]:
        return {"loss_nats_per_char": stream_loss(model, *self.validation, self.device)}


def train(config: Config, run_dir: Path, resume: bool = False, device: str = "auto",
          progress: bool = True) -> dict[str, Any]:
    settings, model_config = config.train, config.model
    device_ = start_run(settings.seed, run_dir, device, run_dir / checkpoints.LAST if resume else None)

    splits = data.load_splits()
    train_tunes = subsample(splits["train"], settings.train_tunes, settings.seed)
    if settings.only_tunes_passing_check:
        train_tunes = tunes_passing_check(train_tunes, run_dir / "train_tunes_passing_check.json", progress)
    validation_tunes = validation_split(config, splits)
    # Augmentation: each epoch also reads `transposed_copies` copies of every tune moved to
    # another key (same rhythm, other pitches), drawn afresh per epoch.
    variants = [transpositions(t["abc"], settings.max_transpose_steps, settings.max_key_fifths)
                for t in train_tunes] if settings.transposed_copies else []
    vocabulary_path = run_dir / VOCABULARY_FILE
    if resume and vocabulary_path.is_file():
        vocabulary = CharVocabulary.load(vocabulary_path)
    else:
        vocabulary = CharVocabulary.from_texts([data.tunes_text(train_tunes),
                                                data.tunes_text([{"abc": v} for vs in variants for v in vs])])
        vocabulary.save(vocabulary_path)
    validation = text_inputs(vocabulary, vocabulary.clean(data.tunes_text(validation_tunes))[0])

    model_args = {"vocab_size": len(vocabulary), "embed_dim": model_config.embed_dim,
                  "hidden_size": model_config.hidden_size, "num_layers": model_config.num_layers,
                  "dropout": model_config.dropout, "clock_dim": model_config.clock_dim}
    model = CharLSTM(**model_args).to(device_)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loop = Loop.from_config(config, model, optimizer, run_dir, device_, model_args,
                            (len(train_tunes), len(validation_tunes)), resume, progress,
                            ema_decay=settings.ema_decay, keep_epochs=settings.keep_epochs,
                            lr_decay_on_plateau=settings.lr_decay)  # a plateau: smaller steps
    return loop.fit(MusicSteps(model, vocabulary, train_tunes, variants, validation, config, device_))


def validation_split(config: Config, splits: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """The validation tunes a run with this config validates on (all, unless the config says how many)."""
    return subsample(splits["validation"], config.train.validation_tunes, config.train.seed)


def tunes_passing_check(tunes: list[dict[str, Any]], cache: Path, show_progress: bool = True) -> list[dict[str, Any]]:
    """The tunes whose bars add up by the strict check (the model should not learn bars that
    don't). music21 takes minutes over the whole split, so the verdicts are kept in the run dir."""
    import inspect

    from seqserve import abc
    from seqserve.abc import check_tune

    # Keyed by the tunes and by the check's own code: a changed check re-judges them.
    digest = hashlib.sha256("\0".join([inspect.getsource(abc)] + [t["abc"] for t in tunes]).encode()).hexdigest()
    if cache.is_file() and (saved := json.loads(cache.read_text()))["tunes_sha256"] == digest:
        passing = saved["passing"]
    else:
        passing = [check_tune(t["abc"]).valid for t in progress(tunes, "checking training tunes", show_progress)]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"tunes_sha256": digest, "passing": passing}))
    kept = [t for t, ok in zip(tunes, passing) if ok]
    tqdm.write(f"training on the {len(kept)} of {len(tunes)} tunes that pass the strict check")
    return kept
