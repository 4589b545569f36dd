"""Sentiment training: a word-level tokenizer from the training split (optionally with GloVe
words and vectors), optionally language-model pretraining of the embedding and both LSTMs,
then the classifier, validated as an EMA of its weights by accuracy, every source (IMDB, Rotten
Tomatoes, and any other domain trained on) weighed alike. Both phases run in the one loop
(`training.loop`): pretraining checkpoints in pretrain.pt, the classifier in last.pt and best.pt."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seqserve.tokenization import TextEncoder, TruncationPolicy
from training import checkpoints
from training.batching import length_bucketed_batches, subsample
from training.config import REPO_ROOT
from training.loop import Loop, Steps, start_run
from training.sentiment import data
from training.sentiment.config import Config
from training.sentiment.model import ReviewLanguageModel, SentimentLSTM
from training.tokenizer import build_word_tokenizer, with_extra_words

PRETRAIN_CHECKPOINT = "pretrain.pt"


def epoch_indices(rows: list[dict[str, Any]], oversample: dict[str, int]) -> list[int]:
    """Each example's index, repeated `oversample[source]` times (default once)."""
    return [i for i, row in enumerate(rows) for _ in range(int(oversample.get(row["source"], 1)))]


def to_tensors(encoder: TextEncoder, sequences: list[list[int]], device: torch.device):
    ids, lengths = encoder.pad(sequences)
    return torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device)


@torch.no_grad()
def logits_of(model: nn.Module, encoder: TextEncoder, sequences: list[list[int]], device: torch.device,
              batch_size: int = 256) -> np.ndarray:
    """The model's logits [examples, 2] for every sequence, in their order (run in batches of
    similar length)."""
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    logits = np.empty((len(sequences), 2))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, lengths = to_tensors(encoder, [sequences[i] for i in batch], device)
        logits[batch] = model(ids, lengths).double().cpu().numpy()
    return logits


def accuracy_by_source(model: nn.Module, encoder: TextEncoder, sequences: list[list[int]],
                       rows: list[dict[str, Any]], device: torch.device, batch_size: int = 256) -> dict[str, float]:
    predicted = logits_of(model, encoder, sequences, device, batch_size).argmax(axis=1)
    correct: dict[str, list[int]] = {}
    for row, label in zip(rows, predicted.tolist()):
        correct.setdefault(row["source"], []).append(int(label == row["label"]))
    scores = {source: sum(hits) / len(hits) for source, hits in sorted(correct.items())}
    # Early stopping weighs the sources alike: the short sentences are a third of the data but
    # as much of what the model must be good at as the long reviews (and so is another domain).
    scores["mean_of_sources"] = sum(scores.values()) / len(scores)
    return scores


class ClassifierSteps(Steps):
    """Cross-entropy on the labels, batches of similar lengths; validated by accuracy per
    source and their mean."""

    metric, higher_is_better = "mean_of_sources", True

    def __init__(self, model: SentimentLSTM, encoder: TextEncoder, sequences: list[list[int]], labels: list[int],
                 indices: list[int], validation: tuple[list[list[int]], list[dict[str, Any]]], batch_size: int,
                 seed: int, device: torch.device):
        self.model, self.encoder, self.sequences, self.labels, self.indices = model, encoder, sequences, labels, indices
        self.validation, self.batch_size, self.seed, self.device = validation, batch_size, seed, device
        self.lengths = [len(s) for s in sequences]

    def batches(self, epoch: int) -> list[list[int]]:
        return length_bucketed_batches(self.indices, self.lengths, self.batch_size, random.Random(self.seed + epoch))

    def loss(self, batch: list[int]) -> tuple[torch.Tensor, int]:
        ids, lengths = to_tensors(self.encoder, [self.sequences[i] for i in batch], self.device)
        labels = torch.tensor([self.labels[i] for i in batch], device=self.device)
        return nn.functional.cross_entropy(self.model(ids, lengths), labels), len(batch)

    def validate(self, model: nn.Module) -> dict[str, float]:
        return accuracy_by_source(model, self.encoder, *self.validation, self.device)


class LanguageModelSteps(Steps):
    """Forward and backward next-word prediction on the training reviews (no labels);
    reported as perplexity."""

    metric, higher_is_better = "perplexity", False

    def __init__(self, language_model: ReviewLanguageModel, encoder: TextEncoder, sequences: list[list[int]],
                 validation_sequences: list[list[int]], batch_size: int, seed: int, device: torch.device):
        self.model, self.encoder, self.sequences = language_model, encoder, sequences
        self.validation_sequences, self.batch_size, self.seed, self.device = validation_sequences, batch_size, seed, device
        self.lengths = [len(s) for s in sequences]

    def batches(self, epoch: int) -> list[list[int]]:
        return length_bucketed_batches(list(range(len(self.sequences))), self.lengths, self.batch_size,
                                       random.Random(self.seed + 1000 + epoch))

    def loss(self, batch: list[int]) -> tuple[torch.Tensor, int] | None:
        loss, predicted = self.model(*to_tensors(self.encoder, [self.sequences[i] for i in batch], self.device))
        return (loss / predicted, predicted) if predicted else None

    @torch.no_grad()
    def validate(self, model: nn.Module, batch_size: int = 128) -> dict[str, float]:
        model.eval()
        sequences = self.validation_sequences
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = [sequences[i] for i in order[start : start + batch_size]]
            loss, predicted = model(*to_tensors(self.encoder, batch, self.device))
            total, count = total + loss.item(), count + predicted
        return {"perplexity": math.exp(total / max(count, 1))}

    def record(self, train_loss: float, validation: dict[str, float]) -> dict[str, Any]:
        return {"train_perplexity": round(math.exp(train_loss), 2),
                "validation_perplexity": round(validation["perplexity"], 2)}

    def postfix(self, train_loss: float) -> dict[str, str]:
        return {"perplexity": f"{math.exp(train_loss):.1f}"}


def train(config: Config, run_dir: Path, resume: bool = False, device: str = "auto",
          progress: bool = True) -> dict[str, Any]:
    settings, model_config, token_config = config.train, config.model, config.tokenizer
    pretraining = config.pretrain.epochs > 0
    last = run_dir / checkpoints.LAST
    # --resume continues the fine-tuning if it has begun, else the language-model pretraining.
    resume_fine_tuning = resume and (not pretraining or last.is_file())
    resume_from = last if resume_fine_tuning else run_dir / PRETRAIN_CHECKPOINT if resume else None
    initial = initial_run(settings.init_from, pretraining) if settings.init_from and not resume_fine_tuning else None
    device_ = start_run(settings.seed, run_dir, device, resume_from)

    splits = data.load_splits()
    train_rows = subsample(splits["train"], settings.train_examples, settings.seed)
    validation_rows = subsample(splits["validation"], settings.validation_examples, settings.seed)

    truncation = TruncationPolicy(token_config.max_tokens, token_config.head_tokens)
    tokenizer_path, words_path = run_dir / "tokenizer.json", run_dir / "vocabulary_sources.json"
    if resume and tokenizer_path.is_file():
        encoder = TextEncoder.from_file(tokenizer_path, truncation)
        trained_words = json.loads(words_path.read_text())["from_training_split"]
    else:
        tokenizer = build_word_tokenizer((r["text"] for r in train_rows), token_config.vocab_size,
                                         token_config.min_frequency)
        trained_words = tokenizer.get_vocab_size()
        if token_config.pretrained_words:
            tokenizer, _ = with_extra_words(tokenizer, data.frequent_pretrained_words(token_config.pretrained_words))
        tokenizer.save(str(tokenizer_path))
        words_path.write_text(json.dumps({"from_training_split": trained_words,
                                          "from_pretrained_vectors_only": tokenizer.get_vocab_size() - trained_words}))
        encoder = TextEncoder(tokenizer, truncation)
    # Other domains join after the tokenizer is built: the vocabulary stays the film reviews',
    # so this model can share one tokenizer (and one ensemble graph) with film-only ones.
    # train_examples / validation_examples cap the film rows and each domain's rows apart.
    # A refit trains on the validation rows too, also joining after the tokenizer (same reason).
    if settings.refit:
        train_rows = train_rows + validation_rows
    for name in settings.domains:
        domain = data.load_domain_training(name)
        domain_validation = subsample(domain["validation"], settings.validation_examples, settings.seed)
        train_rows = (train_rows + subsample(domain["train"], settings.train_examples, settings.seed)
                      + (domain_validation if settings.refit else []))
        validation_rows = validation_rows + domain_validation
    train_sequences = encoder.token_ids([r["text"] for r in train_rows])
    validation_sequences = encoder.token_ids([r["text"] for r in validation_rows])

    model_args = {
        "vocab_size": encoder.vocab_size, "embed_dim": model_config.embed_dim,
        "hidden_size": model_config.hidden_size, "pad_id": encoder.pad_id,
        "embedding_dropout": model_config.embedding_dropout, "dropout": model_config.dropout,
        "attention_pooling": model_config.attention_pooling,
    }
    model = SentimentLSTM(**model_args)
    initialised = 0
    if initial is not None:
        start_from_run(model, initial, tokenizer_path)
    elif model_config.pretrained_embeddings and not resume_fine_tuning:
        initialised = load_pretrained_embeddings(model.embedding, encoder)
    if trained_words < encoder.vocab_size:
        # Words added from GloVe keep their vectors: they never occur in training, and their
        # meaning is where GloVe put them, next to the (fine-tuned) words they resemble.
        frozen = torch.ones(encoder.vocab_size, 1)
        frozen[trained_words:] = 0
        model.embedding.weight.register_hook(lambda grad: grad * frozen.to(grad.device))
    model.to(device_)
    language_model = None
    if pretraining and not resume_fine_tuning:
        language_model = pretrain_language_model(model, encoder, train_sequences, validation_sequences, config,
                                                 run_dir, resume, device_, progress)

    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    loop = Loop.from_config(config, model, optimizer, run_dir, device_, model_args,
                            (len(train_rows), len(validation_rows)), resume_fine_tuning, progress,
                            ema_decay=settings.ema_decay, select_best=not settings.refit,
                            facts={"initialised_from": settings.init_from or None,
                                   "refit_on_validation_too": settings.refit or None,
                                   "pretrained_vectors_used": initialised or None,
                                   "words_from_pretrained_vectors_only": (encoder.vocab_size - trained_words) or None,
                                   "language_model_pretraining": language_model})
    # Early stopping weighs the sources alike; oversampling lets the loss do the same.
    indices = epoch_indices(train_rows, settings.oversample)
    return loop.fit(ClassifierSteps(model, encoder, train_sequences, [r["label"] for r in train_rows], indices,
                                    (validation_sequences, validation_rows), settings.batch_size, settings.seed,
                                    device_))


def pretrain_language_model(model: SentimentLSTM, encoder: TextEncoder, train_sequences: list[list[int]],
                            validation_sequences: list[list[int]], config: Config, run_dir: Path,
                            resume: bool, device: torch.device, progress: bool) -> dict[str, Any]:
    """Train the classifier's embedding and LSTMs as forward and backward language models on
    the training reviews (their words only, no labels), in place; checkpoint every epoch in
    pretrain.pt (--resume continues it). Returns the history, with validation perplexity."""
    spec = config.pretrain
    cutoffs = [c for c in spec.softmax_cutoffs if c < encoder.vocab_size - 1]
    language_model = ReviewLanguageModel(model, cutoffs, spec.dropout).to(device)
    optimizer = torch.optim.Adam(language_model.parameters(), lr=spec.learning_rate)
    loop = Loop(language_model, optimizer, run_dir, device, max_epochs=spec.epochs,
                clip_grad_norm=config.train.clip_grad_norm, checkpoint=PRETRAIN_CHECKPOINT, best=None, summary=None,
                label="language model", show_progress=progress)
    if resume:
        loop.resume("language-model pretraining")
    loop.fit(LanguageModelSteps(language_model, encoder, train_sequences, validation_sequences, spec.batch_size,
                                config.train.seed, device))
    return {"epochs": loop.state["epoch"], "seconds": round(loop.state["seconds"], 1), "softmax_cutoffs": cutoffs,
            "history": loop.state["history"]}


def initial_run(init_from: str, pretraining: bool) -> Path:
    """The run folder `train.init_from` names, checked before any work."""
    if pretraining:
        raise SystemExit("train.init_from starts from trained weights: it cannot follow pretraining "
                         "(pretrain.epochs > 0)")
    return checkpoints.init_run_dir(init_from, REPO_ROOT)


def start_from_run(model: SentimentLSTM, run_dir: Path, tokenizer_path: Path) -> None:
    """Fine-tuning: start from another run's best weights, which must be this network with
    this vocabulary (the same tokenizer file)."""
    if (run_dir / "tokenizer.json").read_bytes() != tokenizer_path.read_bytes():
        raise SystemExit(f"train.init_from: {run_dir} has another tokenizer than this run")
    checkpoints.load_weights_from(model, run_dir)


def load_pretrained_embeddings(embedding: nn.Embedding, encoder: TextEncoder) -> int:
    """Copy GloVe vectors into the rows of words that have one (others keep their random
    init, scaled to match); returns how many rows were set."""
    table = data.load_embeddings()
    dim = next(iter(table.values())).shape[0]
    if dim != embedding.embedding_dim:
        raise SystemExit(f"pretrained vectors are {dim}-d but embed_dim is {embedding.embedding_dim}")
    vocabulary = encoder.tokenizer.get_vocab()
    weights = embedding.weight.data
    scale = float(np.std(np.stack(list(table.values()))))
    nn.init.normal_(weights, std=scale)
    hits = 0
    for word, index in vocabulary.items():
        if word in table:
            weights[index] = torch.from_numpy(table[word])
            hits += 1
    weights[encoder.pad_id].zero_()
    return hits
