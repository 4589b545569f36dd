"""Translation training in the one loop (`training.loop`): teacher forcing with label
smoothing, batches of similar lengths; validated each epoch by greedy-decoding BLEU (first
reference), which early stopping and the learning-rate decay follow. From
`lr_decay_start_epoch` on, the learning rate is also annealed at every epoch's start."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqserve.translation import SubwordCodec
from training import checkpoints
from training.batching import length_bucketed_batches, subsample
from training.config import REPO_ROOT
from training.loop import Loop, Steps, start_run
from training.tokenizer import build_subword_tokenizer
from training.translate import data
from training.translate.config import Config
from training.translate.model import Translator, greedy_translate


def smoothed_nll(log_probs: torch.Tensor, targets: torch.Tensor, pad_id: int, smoothing: float) -> torch.Tensor:
    """Label-smoothed negative log-likelihood per real (non-pad) target token."""
    valid = targets != pad_id
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)
    return (((1 - smoothing) * nll + smoothing * uniform) * valid).sum() / valid.sum()


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """sacreBLEU over hypotheses; references[i] is the i-th reference stream."""
    import sacrebleu

    return sacrebleu.corpus_bleu(hypotheses, references).score


class TranslationSteps(Steps):
    metric, higher_is_better, decimals = "greedy_bleu", True, 2

    def __init__(self, model: Translator, optimizer: torch.optim.Optimizer, codec: SubwordCodec,
                 pairs: tuple[list[list[int]], list[list[int]]], validation: tuple[list[list[int]], list[list[str]]],
                 config: Config, device: torch.device):
        self.model, self.optimizer, self.codec, self.device = model, optimizer, codec, device
        (self.sources, self.targets), self.validation, self.settings = pairs, validation, config.train
        self.lengths = [len(s) + len(t) for s, t in zip(self.sources, self.targets)]

    def on_epoch_start(self, epoch: int) -> None:
        settings = self.settings
        if settings.lr_decay_start_epoch and epoch >= settings.lr_decay_start_epoch:
            # Anneal once the fast early progress is over (kept in the optimizer's state, so a
            # resumed run continues the same schedule).
            for group in self.optimizer.param_groups:
                group["lr"] *= settings.lr_epoch_decay

    def batches(self, epoch: int) -> list[list[int]]:
        return length_bucketed_batches(list(range(len(self.sources))), self.lengths, self.settings.batch_size,
                                       random.Random(self.settings.seed + epoch))

    def loss(self, batch: list[int]) -> tuple[torch.Tensor, int]:
        codec = self.codec
        source_ids, source_lengths = (torch.from_numpy(x).to(self.device)
                                      for x in codec.pad([self.sources[i] for i in batch]))
        target_ids, _ = codec.pad([[codec.bos_id] + self.targets[i] + [codec.eos_id] for i in batch])
        target_ids = torch.from_numpy(target_ids).to(self.device)
        log_probs = self.model(source_ids, source_lengths, target_ids[:, :-1])
        return smoothed_nll(log_probs, target_ids[:, 1:], codec.pad_id, self.settings.label_smoothing), len(batch)

    def validate(self, model: nn.Module) -> dict[str, float]:
        sources, references = self.validation
        hypotheses = [self.codec.decode(ids) for ids in greedy_translate(model, self.codec, sources, self.device)]
        return {"greedy_bleu": corpus_bleu(hypotheses, references)}

    def record(self, train_loss: float, validation: dict[str, float]) -> dict[str, Any]:
        return {"train_loss": round(train_loss, 5), "learning_rate": self.optimizer.param_groups[0]["lr"],
                **super().record(train_loss, validation)}


def train(config: Config, run_dir: Path, resume: bool = False, device: str = "auto",
          progress: bool = True) -> dict[str, Any]:
    settings, model_config, token_config = config.train, config.model, config.tokenizer
    device_ = start_run(settings.seed, run_dir, device, run_dir / checkpoints.LAST if resume else None)

    splits = data.load_splits()
    train_pairs = subsample(data.training_pairs(splits["train"]), settings.train_pairs, settings.seed)
    validation_rows = subsample(splits["validation"], settings.validation_sentences, settings.seed)
    tokenizer_path = run_dir / "tokenizer.json"
    initial = checkpoints.init_run_dir(settings.init_from, REPO_ROOT) if settings.init_from and not resume else None
    if initial is not None:  # the weights were trained with that vocabulary: keep it
        shutil.copyfile(initial / "tokenizer.json", tokenizer_path)
    elif not (resume and tokenizer_path.is_file()):
        texts = [text for pair in train_pairs for text in pair]
        build_subword_tokenizer(texts, token_config.vocab_size, token_config.min_frequency).save(str(tokenizer_path))
    codec = SubwordCodec.from_file(tokenizer_path, token_config.max_source_tokens)
    sources = codec.source_ids([english for english, _ in train_pairs])
    targets = codec.target_ids([spanish for _, spanish in train_pairs], settings.max_target_tokens)
    validation = (codec.source_ids([row["english"] for row in validation_rows]),
                  [[row["spanish"][0] for row in validation_rows]])

    model_args = {"vocab_size": codec.vocab_size, "embed_dim": model_config.embed_dim,
                  "encoder_hidden": model_config.encoder_hidden,
                  "encoder_layers": model_config.encoder_layers, "decoder_hidden": model_config.decoder_hidden,
                  "dropout": model_config.dropout, "pad_id": codec.pad_id}
    model = Translator(**model_args)
    if initial is not None:
        checkpoints.load_weights_from(model, initial)
    model.to(device_)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)
    loop = Loop.from_config(config, model, optimizer, run_dir, device_, model_args,
                            (len(train_pairs), len(validation_rows)), resume, progress,
                            ema_decay=settings.ema_decay, lr_decay_on_plateau=settings.lr_decay,
                            facts={"initialised_from": settings.init_from or None})
    return loop.fit(TranslationSteps(model, optimizer, codec, (sources, targets), validation, config, device_))
