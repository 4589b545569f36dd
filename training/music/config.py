"""The music config (`training/configs/music.toml`), typed: what each key is, checked when loaded."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from training.config import Artifact, Count, Factor, Fraction, Positive, Rate, Seconds, Section, SplitShares, TaskConfig


class Corpus(Section):
    """music21's own corpus: ABC files under these folders of its pinned wheel."""

    package: str
    version: str
    folders: list[str]
    license: str


class Data(SplitShares):
    lab: Artifact
    corpus: Corpus


class Model(Section):
    embed_dim: Positive
    hidden_size: Positive
    num_layers: Positive
    dropout: Fraction
    clock_dim: Positive


class Train(Section):
    seed: int
    batch_size: Positive
    sequence_length: Positive
    learning_rate: Rate
    lr_decay: Factor
    clip_grad_norm: Rate
    ema_decay: Fraction
    max_epochs: Count
    patience: Count
    max_seconds: Seconds
    keep_epochs: bool
    only_tunes_passing_check: bool
    transposed_copies: Count
    max_transpose_steps: Count
    max_key_fifths: Annotated[int, Field(ge=0, le=7)]
    train_tunes: Count
    validation_tunes: Count


class Config(TaskConfig):
    data: Data
    model: Model
    train: Train
