"""The translation config (`training/configs/translate.toml`), typed: what each key is, checked when loaded."""

from __future__ import annotations

from training.config import Artifact, Count, Factor, Fraction, Positive, Rate, Seconds, Section, SplitShares, TaskConfig


class Data(SplitShares, Artifact):
    """The Tatoeba English-Spanish pairs and their split (by English sentence)."""


class Tokenizer(Section):
    vocab_size: Positive
    min_frequency: Positive
    max_source_tokens: Positive


class Model(Section):
    embed_dim: Positive
    encoder_hidden: Positive
    encoder_layers: Positive
    decoder_hidden: Positive
    dropout: Fraction


class Train(Section):
    seed: int
    batch_size: Positive
    learning_rate: Rate
    label_smoothing: Fraction
    clip_grad_norm: Rate
    ema_decay: Fraction
    max_epochs: Count
    patience: Count
    lr_decay: Factor
    lr_decay_start_epoch: Count
    lr_epoch_decay: Factor
    max_target_tokens: Positive
    train_pairs: Count
    validation_sentences: Count
    init_from: str = ""  # a run folder whose best weights and tokenizer start this run (fine-tuning); "" none
    max_seconds: Seconds


class Config(TaskConfig):
    data: Data
    tokenizer: Tokenizer
    model: Model
    train: Train
