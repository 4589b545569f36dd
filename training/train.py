"""Train step. Checkpoints every epoch (`last.pt`, for --resume) and keeps the best by
validation (`best.pt`, for export); writes `training.json` with the history and timing."""

from __future__ import annotations

import hashlib
import json
import math
import platform
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from seqserve.bar_clock import BarClock
from seqserve.characters import CharVocabulary
from seqserve.tokenization import TextEncoder, TruncationPolicy
from seqserve.translation import SubwordCodec
from training.data import music as music_data
from training.data import sentiment as sentiment_data
from training.data import translate as translate_data
from training.data.transpose import transpositions
from training.models.music import CharLSTM
from training.models.sentiment import ReviewLanguageModel, SentimentLSTM
from training.models.translate import Translator, source_mask
from training.tokenizer import build_subword_tokenizer, build_word_tokenizer, with_extra_words


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


def epoch_indices(rows: list[dict[str, Any]], oversample: dict[str, int]) -> list[int]:
    """Each example's index, repeated `oversample[source]` times (default once)."""
    return [i for i, row in enumerate(rows) for _ in range(int(oversample.get(row["source"], 1)))]


def start_run(seed: int, run_dir: Path, resume: bool, device: str) -> tuple[torch.device, Path, Path]:
    """Seed, pick the device, and name the checkpoints: last.pt (every epoch, for --resume)
    and best.pt (best validation, for export)."""
    seed_everything(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = run_dir / "last.pt", run_dir / "best.pt"
    if resume and not last_path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {last_path}")
    return resolve_device(device), last_path, best_path


def length_bucketed_batches(indices: list[int], lengths: list[int], batch_size: int,
                            rng: random.Random) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches so each batch holds similar lengths
    (little padding) while the order of batches stays random."""
    order = list(indices)
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def subsample(rows: list[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    if not count or count >= len(rows):
        return rows
    return random.Random(seed).sample(rows, count)


def to_tensors(encoder: TextEncoder, sequences: list[list[int]], device: torch.device):
    ids, lengths = encoder.pad(sequences)
    return torch.from_numpy(ids).to(device), torch.from_numpy(lengths).to(device)


@torch.no_grad()
def accuracy_by_source(model: nn.Module, encoder: TextEncoder, sequences: list[list[int]],
                       rows: list[dict[str, Any]], device: torch.device, batch_size: int = 256) -> dict[str, float]:
    model.eval()
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    correct: dict[str, list[int]] = {}
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, lengths = to_tensors(encoder, [sequences[i] for i in batch], device)
        predicted = model(ids, lengths).argmax(dim=-1).tolist()
        for i, label in zip(batch, predicted):
            correct.setdefault(rows[i]["source"], []).append(int(label == rows[i]["label"]))
    scores = {source: sum(hits) / len(hits) for source, hits in sorted(correct.items())}
    # Early stopping weighs both sources alike: the short sentences are a third of the data
    # but half of what the model must be good at.
    scores["mean_of_sources"] = sum(scores.values()) / len(scores)
    return scores


def train_sentiment(config: dict[str, Any], run_dir: Path, resume: bool = False,
                    device: str = "auto", progress: bool = True) -> dict[str, Any]:
    settings, model_config, token_config = config["train"], config["model"], config["tokenizer"]
    pretraining = config.get("pretrain", {}).get("epochs", 0) > 0
    # --resume continues the fine-tuning if it has begun, else the language-model pretraining.
    resume_fine_tuning = resume and (not pretraining or (run_dir / "last.pt").is_file())
    device_, last_path, best_path = start_run(settings["seed"], run_dir, resume_fine_tuning, device)

    splits = sentiment_data.load_splits()
    train_rows = subsample(splits["train"], settings["train_examples"], settings["seed"])
    validation_rows = subsample(splits["validation"], settings["validation_examples"], settings["seed"])

    tokenizer_path, words_path = run_dir / "tokenizer.json", run_dir / "vocabulary_sources.json"
    if resume and tokenizer_path.is_file():
        encoder = TextEncoder.from_file(tokenizer_path, TruncationPolicy(token_config["max_tokens"], token_config["head_tokens"]))
        trained_words = json.loads(words_path.read_text())["from_training_split"]
    else:
        tokenizer = build_word_tokenizer((r["text"] for r in train_rows), token_config["vocab_size"], token_config["min_frequency"])
        trained_words = tokenizer.get_vocab_size()
        if token_config.get("pretrained_words"):
            tokenizer, _ = with_extra_words(tokenizer, sentiment_data.frequent_pretrained_words(token_config["pretrained_words"]))
        tokenizer.save(str(tokenizer_path))
        words_path.write_text(json.dumps({"from_training_split": trained_words,
                                          "from_pretrained_vectors_only": tokenizer.get_vocab_size() - trained_words}))
        encoder = TextEncoder(tokenizer, TruncationPolicy(token_config["max_tokens"], token_config["head_tokens"]))
    train_sequences = encoder.token_ids([r["text"] for r in train_rows])
    validation_sequences = encoder.token_ids([r["text"] for r in validation_rows])
    train_labels = [r["label"] for r in train_rows]

    model_args = {
        "vocab_size": encoder.vocab_size, "embed_dim": model_config["embed_dim"],
        "hidden_size": model_config["hidden_size"], "pad_id": encoder.pad_id,
        "embedding_dropout": model_config["embedding_dropout"], "dropout": model_config["dropout"],
        "attention_pooling": model_config.get("attention_pooling", False),
    }
    model = SentimentLSTM(**model_args)
    initialised = 0
    if model_config.get("pretrained_embeddings") and not resume_fine_tuning:
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
        language_model = pretrain_language_model(model, encoder, train_sequences, validation_sequences, config, run_dir,
                                                 resume, device_, progress)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["learning_rate"], weight_decay=settings["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    # An exponential moving average of the weights is what gets validated and exported: it
    # smooths the step-to-step noise that makes a small validation set pick a lucky epoch.
    decay = settings.get("ema_decay", 0.0)
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay)) if decay else None
    evaluated = averaged.module if averaged else model

    state = {"epoch": 0, "best_score": -1.0, "best_epoch": 0, "bad_epochs": 0, "history": [], "seconds": 0.0,
             "pretrained_vectors_used": initialised, "words_from_pretrained_vectors_only": encoder.vocab_size - trained_words,
             "language_model_pretraining": language_model}
    if resume_fine_tuning:
        checkpoint = torch.load(last_path, map_location=device_, weights_only=False)
        model.load_state_dict(checkpoint["model"])
        if averaged:
            averaged.load_state_dict(checkpoint["averaged"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = checkpoint["state"]
        random.setstate(checkpoint["rng"]["python"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        print(f"resumed from {last_path} after epoch {state['epoch']}")

    lengths = [len(s) for s in train_sequences]
    # Early stopping weighs the sources alike; oversampling lets the loss do the same.
    indices = epoch_indices(train_rows, settings.get("oversample", {}))
    budget = settings.get("max_seconds", 0)
    while (state["epoch"] < settings["max_epochs"] and state["bad_epochs"] < settings["patience"]
           and not (budget and state["seconds"] >= budget)):
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        model.train()
        # Seeded per epoch, so a resumed run sees the same batches as an uninterrupted one.
        batches = length_bucketed_batches(indices, lengths, settings["batch_size"], random.Random(settings["seed"] + epoch))
        bar = tqdm(batches, desc=f"epoch {epoch}/{settings['max_epochs']}", disable=not progress)
        total_loss, seen = 0.0, 0
        for batch in bar:
            ids, lens = to_tensors(encoder, [train_sequences[i] for i in batch], device_)
            labels = torch.tensor([train_labels[i] for i in batch], device=device_)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(ids, lens), labels)
            loss.backward()
            # Exploding gradients: clip the global norm before each step.
            nn.utils.clip_grad_norm_(model.parameters(), settings["clip_grad_norm"])
            optimizer.step()
            if averaged:
                averaged.update_parameters(model)
            total_loss += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        validation = accuracy_by_source(evaluated, encoder, validation_sequences, validation_rows, device_)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", **{f"val_{k}": f"{v:.4f}" for k, v in validation.items()})
        bar.close()
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch
        record = {"epoch": epoch, "train_loss": round(total_loss / seen, 5),
                  "validation": {k: round(v, 5) for k, v in validation.items()},
                  "seconds": round(time.perf_counter() - started, 1)}
        state["history"].append(record)
        score = validation["mean_of_sources"]
        improved = score > state["best_score"]
        if improved:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            torch.save({"model": evaluated.state_dict(), "model_args": model_args, "config": config,
                        "epoch": epoch, "validation": validation}, best_path)
        else:
            state["bad_epochs"] += 1
        torch.save({"model": model.state_dict(), "averaged": averaged.state_dict() if averaged else None,
                    "optimizer": optimizer.state_dict(), "state": state,
                    "rng": {"python": random.getstate(), "torch": torch.get_rng_state()}}, last_path)
        tqdm.write(f"epoch {epoch}: train loss {record['train_loss']:.4f}, validation accuracy "
                   + ", ".join(f"{k} {v:.4f}" for k, v in validation.items())
                   + (" (best)" if improved else f" (no gain for {state['bad_epochs']})"))
        write_summary(run_dir, state, settings, device_, len(train_rows), len(validation_rows), finished=False)

    summary = write_summary(run_dir, state, settings, device_, len(train_rows), len(validation_rows), finished=True)
    return {k: v for k, v in summary.items() if k != "history"}


def pretrain_language_model(model: SentimentLSTM, encoder: TextEncoder, train_sequences: list[list[int]],
                            validation_sequences: list[list[int]], config: dict[str, Any], run_dir: Path,
                            resume: bool, device: torch.device, progress: bool) -> dict[str, Any]:
    """Train the classifier's embedding and LSTMs as forward and backward language models on
    the training reviews (their words only, no labels), in place; checkpoint every epoch in
    pretrain.pt (--resume continues it). Returns the history, with validation perplexity."""
    spec, seed = config["pretrain"], config["train"]["seed"]
    cutoffs = [c for c in spec["softmax_cutoffs"] if c < encoder.vocab_size - 1]
    language_model = ReviewLanguageModel(model, cutoffs, spec["dropout"]).to(device)
    optimizer = torch.optim.Adam(language_model.parameters(), lr=spec["learning_rate"])
    path = run_dir / "pretrain.pt"
    state: dict[str, Any] = {"epoch": 0, "history": [], "seconds": 0.0}
    if resume and not path.is_file():
        raise SystemExit(f"--resume: no checkpoint at {path} (nor {run_dir / 'last.pt'})")
    if resume:
        checkpoint = torch.load(path, map_location=device, weights_only=False)
        language_model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        state = checkpoint["state"]
        torch.set_rng_state(checkpoint["rng"])
        print(f"resumed language-model pretraining from {path} after epoch {state['epoch']}")

    def perplexity(sequences: list[list[int]], batch_size: int = 128) -> float:
        language_model.eval()
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(order), batch_size):
                loss, predicted = language_model(*to_tensors(encoder, [sequences[i] for i in order[start : start + batch_size]], device))
                total, count = total + loss.item(), count + predicted
        return math.exp(total / max(count, 1))

    lengths = [len(s) for s in train_sequences]
    while state["epoch"] < spec["epochs"]:
        epoch, started = state["epoch"] + 1, time.perf_counter()
        language_model.train()
        batches = length_bucketed_batches(list(range(len(train_sequences))), lengths, spec["batch_size"],
                                          random.Random(seed + 1000 + epoch))
        bar = tqdm(batches, desc=f"language model {epoch}/{spec['epochs']}", disable=not progress)
        total, count = 0.0, 0
        for batch in bar:
            loss, predicted = language_model(*to_tensors(encoder, [train_sequences[i] for i in batch], device))
            if not predicted:
                continue
            optimizer.zero_grad(set_to_none=True)
            (loss / predicted).backward()
            nn.utils.clip_grad_norm_(language_model.parameters(), config["train"]["clip_grad_norm"])
            optimizer.step()
            total, count = total + loss.item(), count + predicted
            bar.set_postfix(perplexity=f"{math.exp(total / count):.1f}", refresh=False)
        bar.close()
        record = {"epoch": epoch, "train_perplexity": round(math.exp(total / count), 2),
                  "validation_perplexity": round(perplexity(validation_sequences), 2),
                  "seconds": round(time.perf_counter() - started, 1)}
        state["epoch"], state["seconds"] = epoch, state["seconds"] + record["seconds"]
        state["history"].append(record)
        torch.save({"model": language_model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                    "rng": torch.get_rng_state()}, path)
        tqdm.write(f"language model epoch {epoch}: perplexity {record['train_perplexity']} (train), "
                   f"{record['validation_perplexity']} (validation), {record['seconds']} s")
    return {"epochs": state["epoch"], "seconds": round(state["seconds"], 1), "softmax_cutoffs": cutoffs,
            "history": state["history"]}


def write_summary(run_dir: Path, state: dict[str, Any], settings: dict[str, Any], device: torch.device,
                  train_examples: int, validation_examples: int, finished: bool) -> dict[str, Any]:
    best = state["history"][state["best_epoch"] - 1]["validation"] if state["best_epoch"] else None
    summary = {
        "device": device.type, "hardware": hardware_description(device),
        "torch_version": torch.__version__, "seconds": round(state["seconds"], 1),
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "best_validation": best,
        "stopped": ("running" if not finished
                    else "early stopping" if state["bad_epochs"] >= settings["patience"]
                    else "time budget" if settings.get("max_seconds") and state["seconds"] >= settings["max_seconds"]
                    else "max_epochs"),
        "train_examples": train_examples, "validation_examples": validation_examples,
        "pretrained_vectors_used": state.get("pretrained_vectors_used") or None,
        "words_from_pretrained_vectors_only": state.get("words_from_pretrained_vectors_only") or None,
        "language_model_pretraining": state.get("language_model_pretraining"),
        "history": state["history"],
    }
    (run_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def load_pretrained_embeddings(embedding: nn.Embedding, encoder: TextEncoder) -> int:
    """Copy GloVe vectors into the rows of words that have one (others keep their random
    init, scaled to match); returns how many rows were set."""
    table = sentiment_data.load_embeddings()
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


def new_state() -> dict[str, Any]:
    """Where a run stands: epochs done, best validation score and epoch, history, time spent."""
    return {"epoch": 0, "best_score": float("-inf"), "best_epoch": 0, "bad_epochs": 0, "history": [], "seconds": 0.0}


def resume_state(last_path: Path, model: nn.Module, optimizer: torch.optim.Optimizer,
                 device: torch.device) -> dict[str, Any]:
    """Load the last epoch's checkpoint (model, optimizer, RNG) and return its run state."""
    checkpoint = torch.load(last_path, map_location=device, weights_only=False)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.set_rng_state(checkpoint["rng"]["torch"])
    print(f"resumed from {last_path} after epoch {checkpoint['state']['epoch']}")
    return checkpoint["state"]


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
    data, clock_data = streams(ids, batch).to(device), streams(clocks, batch).to(device)
    h, c = model.initial_state(batch, device)
    total, count = 0.0, 0
    for start in range(0, data.shape[1] - 1, window):
        inputs, targets = data[:, start : start + window], data[:, start + 1 : start + window + 1]
        width = targets.shape[1]
        logits, h, c = model(inputs[:, :width], clock_data[:, start : start + width], h, c)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             reduction="sum").item()
        count += targets.numel()
    return total / count


def train_music(config: dict[str, Any], run_dir: Path, resume: bool = False,
                device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Truncated backpropagation through time: the text is cut into `batch_size` streams read
    in windows of `sequence_length`; the LSTM state carries from one window to the next
    (detached, so gradients stop at the window's edge)."""
    settings, model_config = config["train"], config["model"]
    device_, last_path, best_path = start_run(settings["seed"], run_dir, resume, device)

    splits = music_data.load_splits()
    train_tunes = subsample(splits["train"], settings["train_tunes"], settings["seed"])
    if settings.get("only_tunes_passing_check"):
        train_tunes = tunes_passing_check(train_tunes, run_dir / "train_tunes_passing_check.json")
    validation_tunes = subsample(splits["validation"], settings["validation_tunes"], settings["seed"])
    # Augmentation: each epoch also reads `transposed_copies` copies of every tune moved to
    # another key (same rhythm, other pitches), drawn afresh per epoch.
    variants = [transpositions(t["abc"], settings.get("max_transpose_steps", 3), settings.get("max_key_fifths", 4))
                for t in train_tunes] if settings.get("transposed_copies") else []
    vocabulary_path = run_dir / "vocabulary.json"
    if resume and vocabulary_path.is_file():
        vocabulary = CharVocabulary.load(vocabulary_path)
    else:
        vocabulary = CharVocabulary.from_texts([music_data.tunes_text(train_tunes),
                                                music_data.tunes_text([{"abc": v} for vs in variants for v in vs])])
        vocabulary.save(vocabulary_path)
    validation_ids, validation_clocks = text_inputs(vocabulary, vocabulary.clean(music_data.tunes_text(validation_tunes))[0])

    model_args = {"vocab_size": len(vocabulary), "embed_dim": model_config["embed_dim"],
                  "hidden_size": model_config["hidden_size"], "num_layers": model_config["num_layers"],
                  "dropout": model_config["dropout"], "clock_dim": model_config["clock_dim"]}
    model = CharLSTM(**model_args).to(device_)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["learning_rate"])
    state = resume_state(last_path, model, optimizer, device_) if resume else new_state()

    batch, window = settings["batch_size"], settings["sequence_length"]
    budget = settings.get("max_seconds", 0)
    while (state["epoch"] < settings["max_epochs"] and state["bad_epochs"] < settings["patience"]
           and not (budget and state["seconds"] >= budget)):
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        model.train()
        rng = random.Random(settings["seed"] + epoch)
        order = list(train_tunes)
        for tune_variants in variants:
            order += [{"abc": v} for v in rng.sample(tune_variants, min(settings["transposed_copies"], len(tune_variants)))]
        rng.shuffle(order)
        ids, clocks = text_inputs(vocabulary, music_data.tunes_text(order))
        data, clock_data = streams(ids, batch).to(device_), streams(clocks, batch).to(device_)
        h, c = model.initial_state(batch, device_)
        bar = tqdm(range(0, data.shape[1] - 1, window), desc=f"epoch {epoch}/{settings['max_epochs']}",
                   disable=not progress)
        total_loss, seen = 0.0, 0
        for start in bar:
            targets = data[:, start + 1 : start + window + 1]
            inputs = data[:, start : start + targets.shape[1]]
            logits, h, c = model(inputs, clock_data[:, start : start + targets.shape[1]], h, c)
            h, c = h.detach(), c.detach()
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings["clip_grad_norm"])
            optimizer.step()
            total_loss += loss.item() * targets.numel()
            seen += targets.numel()
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        validation_loss = stream_loss(model, validation_ids, validation_clocks, device_)
        bar.set_postfix(loss=f"{total_loss / seen:.4f}", val_loss=f"{validation_loss:.4f}")
        bar.close()
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch
        record = {"epoch": epoch, "train_loss": round(total_loss / seen, 5),
                  "validation": {"loss_nats_per_char": round(validation_loss, 5)},
                  "seconds": round(time.perf_counter() - started, 1)}
        state["history"].append(record)
        improved = -validation_loss > state["best_score"]
        if improved:
            state.update(best_score=-validation_loss, best_epoch=epoch, bad_epochs=0)
            torch.save({"model": model.state_dict(), "model_args": model_args, "config": config,
                        "epoch": epoch, "validation": record["validation"]}, best_path)
        else:
            state["bad_epochs"] += 1
            for group in optimizer.param_groups:  # a plateau: smaller steps (kept in the optimizer's state)
                group["lr"] *= settings.get("lr_decay", 1.0)
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                    "rng": {"torch": torch.get_rng_state()}}, last_path)
        tqdm.write(f"epoch {epoch}: train loss {record['train_loss']:.4f}, validation loss "
                   f"{validation_loss:.4f} nats/char" + (" (best)" if improved else f" (no gain for {state['bad_epochs']}; "
                                                         f"lr -> {optimizer.param_groups[0]['lr']:.2g})"))
        write_summary(run_dir, state, settings, device_, len(train_tunes), len(validation_tunes), finished=False)

    summary = write_summary(run_dir, state, settings, device_, len(train_tunes), len(validation_tunes), finished=True)
    return {k: v for k, v in summary.items() if k != "history"}


def tunes_passing_check(tunes: list[dict[str, Any]], cache: Path) -> list[dict[str, Any]]:
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
        passing = [check_tune(t["abc"]).valid for t in tqdm(tunes, desc="checking training tunes", mininterval=10)]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"tunes_sha256": digest, "passing": passing}))
    kept = [t for t, ok in zip(tunes, passing) if ok]
    tqdm.write(f"training on the {len(kept)} of {len(tunes)} tunes that pass the strict check")
    return kept


def smoothed_nll(log_probs: torch.Tensor, targets: torch.Tensor, pad_id: int, smoothing: float) -> torch.Tensor:
    """Label-smoothed negative log-likelihood per real (non-pad) target token."""
    valid = targets != pad_id
    nll = -log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)
    return (((1 - smoothing) * nll + smoothing * uniform) * valid).sum() / valid.sum()


@torch.no_grad()
def greedy_translate(model: Translator, codec: SubwordCodec, sources: list[list[int]], device: torch.device,
                     max_length: int = 100, batch_size: int = 256) -> list[list[int]]:
    """Greedy decoding with the torch model (validation during training)."""
    model.eval()
    outputs: list[list[int]] = [[] for _ in sources]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, lengths = (torch.from_numpy(x).to(device) for x in codec.pad([sources[i] for i in batch]))
        memory, keys, h, c = model.encode(ids, lengths)
        mask = source_mask(ids, lengths)
        previous = torch.full((len(batch),), codec.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)
        produced = []
        for _ in range(max_length):
            log_probs, h, c, _ = model.step(previous, h, c, memory, keys, mask)
            previous = log_probs.argmax(dim=-1)
            produced.append(previous)
            done |= previous == codec.eos_id
            if done.all():
                break
        for row, ids_out in zip(batch, torch.stack(produced, dim=1).tolist()):
            outputs[row] = ids_out[: ids_out.index(codec.eos_id)] if codec.eos_id in ids_out else ids_out
    return outputs


def corpus_bleu(hypotheses: list[str], references: list[list[str]]) -> float:
    """sacreBLEU over hypotheses; references[i] is the i-th reference stream."""
    import sacrebleu

    return sacrebleu.corpus_bleu(hypotheses, references).score


def train_translate(config: dict[str, Any], run_dir: Path, resume: bool = False,
                    device: str = "auto", progress: bool = True) -> dict[str, Any]:
    """Teacher forcing with label smoothing; validated each epoch by greedy-decoding BLEU
    (first reference), which early stopping and the learning-rate decay follow."""
    settings, model_config, token_config = config["train"], config["model"], config["tokenizer"]
    device_, last_path, best_path = start_run(settings["seed"], run_dir, resume, device)

    splits = translate_data.load_splits()
    train_pairs = subsample(translate_data.training_pairs(splits["train"]), settings["train_pairs"], settings["seed"])
    validation_rows = subsample(splits["validation"], settings["validation_sentences"], settings["seed"])
    tokenizer_path = run_dir / "tokenizer.json"
    if not (resume and tokenizer_path.is_file()):
        texts = [text for pair in train_pairs for text in pair]
        build_subword_tokenizer(texts, token_config["vocab_size"], token_config["min_frequency"]).save(str(tokenizer_path))
    codec = SubwordCodec.from_file(tokenizer_path, token_config["max_source_tokens"])
    sources = codec.source_ids([english for english, _ in train_pairs])
    targets = codec.target_ids([spanish for _, spanish in train_pairs], settings["max_target_tokens"])
    validation_sources = codec.source_ids([row["english"] for row in validation_rows])
    validation_references = [[row["spanish"][0] for row in validation_rows]]

    model_args = {"vocab_size": codec.vocab_size, "embed_dim": model_config["embed_dim"],
                  "encoder_hidden": model_config["encoder_hidden"], "decoder_hidden": model_config["decoder_hidden"],
                  "dropout": model_config["dropout"], "pad_id": codec.pad_id}
    model = Translator(**model_args).to(device_)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings["learning_rate"])
    state = resume_state(last_path, model, optimizer, device_) if resume else new_state()

    lengths = [len(s) + len(t) for s, t in zip(sources, targets)]
    budget = settings.get("max_seconds", 0)
    while (state["epoch"] < settings["max_epochs"] and state["bad_epochs"] < settings["patience"]
           and not (budget and state["seconds"] >= budget)):
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        if settings.get("lr_decay_start_epoch") and epoch >= settings["lr_decay_start_epoch"]:
            # Anneal once the fast early progress is over (kept in the optimizer's state, so a
            # resumed run continues the same schedule).
            for group in optimizer.param_groups:
                group["lr"] *= settings["lr_epoch_decay"]
        model.train()
        batches = length_bucketed_batches(list(range(len(sources))), lengths, settings["batch_size"],
                                          random.Random(settings["seed"] + epoch))
        bar = tqdm(batches, desc=f"epoch {epoch}/{settings['max_epochs']}", disable=not progress, mininterval=10)
        total_loss, seen = 0.0, 0
        for batch in bar:
            source_ids, source_lengths = (torch.from_numpy(x).to(device_) for x in codec.pad([sources[i] for i in batch]))
            target_ids, _ = codec.pad([[codec.bos_id] + targets[i] + [codec.eos_id] for i in batch])
            target_ids = torch.from_numpy(target_ids).to(device_)
            log_probs = model(source_ids, source_lengths, target_ids[:, :-1])
            loss = smoothed_nll(log_probs, target_ids[:, 1:], codec.pad_id, settings["label_smoothing"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), settings["clip_grad_norm"])
            optimizer.step()
            total_loss += loss.item() * len(batch)
            seen += len(batch)
            bar.set_postfix(loss=f"{total_loss / seen:.4f}", refresh=False)
        hypotheses = [codec.decode(ids) for ids in greedy_translate(model, codec, validation_sources, device_)]
        bleu = corpus_bleu(hypotheses, validation_references)
        bar.close()
        state["seconds"] += time.perf_counter() - started
        state["epoch"] = epoch
        learning_rate = optimizer.param_groups[0]["lr"]
        record = {"epoch": epoch, "train_loss": round(total_loss / seen, 5), "learning_rate": learning_rate,
                  "validation": {"greedy_bleu": round(bleu, 2)}, "seconds": round(time.perf_counter() - started, 1)}
        state["history"].append(record)
        improved = bleu > state["best_score"]
        if improved:
            state.update(best_score=bleu, best_epoch=epoch, bad_epochs=0)
            torch.save({"model": model.state_dict(), "model_args": model_args, "config": config,
                        "epoch": epoch, "validation": record["validation"]}, best_path)
        else:
            state["bad_epochs"] += 1
            for group in optimizer.param_groups:
                group["lr"] *= settings["lr_decay"]
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state,
                    "rng": {"torch": torch.get_rng_state()}}, last_path)
        tqdm.write(f"epoch {epoch}: train loss {record['train_loss']:.4f}, validation greedy BLEU {bleu:.2f}"
                   + (" (best)" if improved else f" (no gain for {state['bad_epochs']}; lr -> "
                                                  f"{optimizer.param_groups[0]['lr']:.2g})"))
        write_summary(run_dir, state, settings, device_, len(train_pairs), len(validation_rows), finished=False)

    summary = write_summary(run_dir, state, settings, device_, len(train_pairs), len(validation_rows), finished=True)
    return {k: v for k, v in summary.items() if k != "history"}
