"""Export step: best checkpoint -> ONNX graph + tokenizer + manifest under models/<task>/<version>/.

An export never destroys a model: by default it writes the next free version (one more than
the highest under models/<task>/), and it refuses a version that already exists unless told
to replace it (`force`). The version is built in a temporary sibling folder and renamed into
place only once it is complete; a replaced version is moved aside first and removed only
after the new one is in place. The service serves the highest version of each task.

Every export is checked before it is written as a version: `onnx.checker`, every declared
dynamic axis still symbolic, and ONNX Runtime agreeing with torch at batch 1, length 1 and
on ragged batches. Export each model in its own process (the CLI does): exporting several
LSTM models in one process was seen to pin the sequence axis to a constant.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch

from seqserve.manifest import DataSource, GraphSpec, Manifest, TensorSpec, file_entries, newest_version_dir
from seqserve.sentiment import LABELS
from seqserve.tokenization import TextEncoder, TruncationPolicy
from training.data import sentiment as sentiment_data
from training.models.sentiment import SentimentEnsemble, SentimentLSTM

OPSET = 18
PARITY_ATOL = 1e-4
GRAPH_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"


def export_graph(model: torch.nn.Module, example: tuple[torch.Tensor, ...], path: Path,
                 input_names: list[str], output_names: list[str], dynamic_shapes: dict[str, Any]) -> onnx.ModelProto:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, example, str(path), dynamo=True, external_data=False, opset_version=OPSET,
                      input_names=input_names, output_names=output_names, dynamic_shapes=dynamic_shapes)
    graph = onnx.load(str(path))
    onnx.checker.check_model(graph, full_check=True)
    return graph


def relabel_output_axes(path: Path, axes: dict[str, dict[int, str]]) -> onnx.ModelProto:
    """Give outputs back the symbolic axis names the exporter's shape annotation lost.

    torch 2.13 traces nn.LSTM's output length from the example input, so the declared shape
    of an output that follows the sequence says e.g. 5 while the graph computes any length.
    Only annotations change here (stale intermediate ones are dropped); the parity checks
    then run the graph at other lengths to prove it."""
    graph = onnx.load(str(path))
    outputs = {v.name: v for v in graph.graph.output}
    for name, dims in axes.items():
        for axis, label in dims.items():
            outputs[name].type.tensor_type.shape.dim[axis].dim_param = label
    del graph.graph.value_info[:]
    onnx.checker.check_model(graph, full_check=True)
    onnx.save(graph, str(path))
    return graph


def check_symbolic_axes(graph: onnx.ModelProto, expected: dict[str, dict[int, str]]) -> None:
    """Fail if any axis we declared dynamic came out as a fixed number."""
    values = {v.name: v for v in list(graph.graph.input) + list(graph.graph.output)}
    for name, axes in expected.items():
        dims = values[name].type.tensor_type.shape.dim
        for axis, label in axes.items():
            if not dims[axis].dim_param:
                raise AssertionError(f"{name} axis {axis} ({label}) was fixed to {dims[axis].dim_value} at export")


def signature(graph: onnx.ModelProto) -> tuple[list[TensorSpec], list[TensorSpec]]:
    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        shape = [d.dim_param or d.dim_value for d in tensor.shape.dim]
        return TensorSpec(name=value.name, dtype=onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name, shape=shape)

    return [spec(v) for v in graph.graph.input], [spec(v) for v in graph.graph.output]


class VersionExists(FileExistsError):
    """The version to write is already there and replacing it was not asked for."""


def next_version(task_dir: Path) -> str:
    """One more than the highest numeric version under `task_dir` (as the service finds
    versions: `newest_version_dir`), "1" if there is none; never a name already taken."""
    newest = newest_version_dir(task_dir)
    number = int(newest.name) + 1 if newest is not None and newest.name.isdigit() else 1
    while (Path(task_dir) / str(number)).exists():  # e.g. a folder without a manifest
        number += 1
    return str(number)


def check_target(model_dir: Path, force: bool = False) -> None:
    """Refuse to write over an existing version unless `force`."""
    model_dir = Path(model_dir)
    if (model_dir.exists() or model_dir.is_symlink()) and not force:
        raise VersionExists(f"{model_dir} already exists: refusing to replace that version. Pass --force to replace it.")


@contextmanager
def staged(model_dir: Path, force: bool = False) -> Iterator[Path]:
    """An empty temporary folder beside the version, to build it in; `publish` renames it
    into place. Refuses at once (before any export work) if the version exists and not
    `force`. Whatever is left of the folder is removed on the way out, failure or not."""
    model_dir = Path(model_dir)
    check_target(model_dir, force)
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    # not tempfile.mkdtemp: its mode 0700 would become the version's, unreadable to a service run as another user
    staging = model_dir.with_name(f".{model_dir.name}.{uuid.uuid4().hex[:8]}.partial")
    staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already gone once published


def publish(manifest: Manifest, staging: Path, model_dir: Path, evaluate: Callable[[Path], dict[str, Any]],
            force: bool = False) -> Manifest:
    """Evaluate the staged graphs, write their metrics into the manifest, then rename the
    staged folder into place as the version. An existing version is refused unless `force`;
    then it is moved aside, and removed only after the new version is in place (put back if
    that rename fails). Nothing is deleted before the new version is complete."""
    model_dir = Path(model_dir)
    manifest.save(staging)
    manifest.metrics |= evaluate(staging)
    manifest.save(staging)
    check_target(model_dir, force)  # again: it may have appeared while exporting
    if not (model_dir.exists() or model_dir.is_symlink()):
        staging.rename(model_dir)  # fails, rather than replace it, if a version appeared since
        return manifest
    aside = model_dir.with_name(f".{model_dir.name}.replaced-{uuid.uuid4().hex[:8]}")
    model_dir.rename(aside)
    try:
        staging.rename(model_dir)
    except BaseException:
        aside.rename(model_dir)
        raise
    if aside.is_dir() and not aside.is_symlink():
        shutil.rmtree(aside)
    else:
        aside.unlink()
    return manifest


def cpu_session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def check_sentiment_parity(model: SentimentLSTM, session: ort.InferenceSession, encoder: TextEncoder,
                           texts: list[str]) -> float:
    """ORT vs torch on: each text alone (batch 1), a one-token input (length 1), and all texts
    as one ragged batch, also against each text run alone. Returns the largest difference."""
    def run_torch(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(ids), torch.from_numpy(lengths)).numpy()

    def run_ort(ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"input_ids": ids, "lengths": lengths})[0]

    worst = 0.0
    alone = []
    for text in texts + ["Great"]:
        ids, lengths = encoder.encode([text])
        expected = run_torch(ids, lengths)
        worst = max(worst, float(np.abs(run_ort(ids, lengths) - expected).max()))
        alone.append(expected[0])
    one_step = np.array([[encoder.unk_id]], dtype=np.int64), np.array([1], dtype=np.int64)
    worst = max(worst, float(np.abs(run_ort(*one_step) - run_torch(*one_step)).max()))
    ids, lengths = encoder.encode(texts)
    assert len(set(lengths.tolist())) > 1, "the ragged check needs texts of different lengths"
    ragged = run_ort(ids, lengths)
    worst = max(worst, float(np.abs(ragged - run_torch(ids, lengths)).max()))
    worst = max(worst, float(np.abs(ragged - np.stack(alone[: len(texts)])).max()))
    if worst > PARITY_ATOL:
        raise AssertionError(f"ONNX Runtime differs from torch by {worst:.2e} (> {PARITY_ATOL})")
    return worst


def export_sentiment(run_dir: Path, model_dir: Path, version: str, ensemble_with: list[Path] = (),
                     force: bool = False) -> Manifest:
    """Export the run's best checkpoint; with `ensemble_with`, one graph that averages it with
    those runs' best checkpoints (which must share its tokenizer)."""
    from training.evaluate import evaluate_sentiment

    run_dirs = [run_dir, *ensemble_with]
    members = [load_best(path, SentimentLSTM) for path in run_dirs]
    tokenizers = {(path / TOKENIZER_FILE).read_bytes() for path in run_dirs}
    if len(tokenizers) > 1:
        raise SystemExit("an ensemble's members must share one tokenizer: "
                         + ", ".join(str(path / TOKENIZER_FILE) for path in run_dirs) + " differ")
    model = members[0][0] if len(members) == 1 else SentimentEnsemble([m for m, _ in members]).eval()
    checkpoint = members[0][1]
    config = checkpoint["config"]
    summaries = [json.loads((path / "training.json").read_text()) for path in run_dirs]

    with staged(model_dir, force) as staging:
        shutil.copyfile(run_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        truncation = TruncationPolicy(config["tokenizer"]["max_tokens"], config["tokenizer"]["head_tokens"])
        encoder = TextEncoder.from_file(staging / TOKENIZER_FILE, truncation)

        # The example's batch and length must differ from 1 so the exporter cannot specialise them.
        example = tuple(torch.from_numpy(a) for a in encoder.encode(["a fine film", "not good at all , sadly"]))
        dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "lengths": {0: "batch"}, "logits": {0: "batch"}}
        batch, sequence = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=1)
        graph = export_graph(model, example, staging / GRAPH_FILE, ["input_ids", "lengths"], ["logits"],
                             {"input_ids": {0: batch, 1: sequence}, "lengths": {0: batch}})
        check_symbolic_axes(graph, dynamic)
        parity_texts = [row["text"] for row in sentiment_data.load_splits()["validation"][:6]] + ["Loved it!"]
        worst = check_sentiment_parity(model, cpu_session(staging / GRAPH_FILE), encoder, parity_texts)
        inputs, outputs = signature(graph)

        meta = sentiment_data.load_meta()
        manifest = Manifest(
            name="sentiment",
            version=version,
            task="sentiment",
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            description=("Binary sentiment of English movie reviews: embedding -> bidirectional LSTM -> "
                         "pooling over valid positions -> linear"
                         + (f"; {len(members)} such classifiers, their probabilities averaged."
                            if len(members) > 1 else ".")),
            files=file_entries(staging, [GRAPH_FILE, TOKENIZER_FILE]),
            graphs={"classifier": GraphSpec(file=GRAPH_FILE, inputs=inputs, outputs=outputs)},
            opset=OPSET,
            torch_version=torch.__version__,
            onnx_version=onnx.__version__,
            preprocessing={
                "tokenizer": TOKENIZER_FILE,
                "max_tokens": truncation.max_tokens,
                "head_tokens": truncation.head_tokens,
                "labels": list(LABELS),
            },
            data=DataSource(
                package=meta["package"], version=meta["version"], file=meta["file"], sha256=meta["sha256"],
                license=meta["license"], splits=meta["splits"],
                extra={k: meta[k] for k in ("seed", "by_source", "duplicates_removed", "embeddings") if k in meta},
            ),
            hyperparameters=(sentiment_hyperparameters(checkpoint) if len(members) == 1 else
                             {"ensemble": "mean of the members' probabilities",
                              "members": [sentiment_hyperparameters(c) for _, c in members]}),
            training=(summaries[0] if len(members) == 1 else
                      {"hardware": summaries[0]["hardware"], "members": summaries,
                       # every member's training, language-model pretraining included
                       "seconds": round(sum(s["seconds"] + (s.get("language_model_pretraining") or {}).get("seconds", 0)
                                            for s in summaries), 1)}),
            metrics={"parity_max_abs_diff": worst},
        )
        return publish(manifest, staging, model_dir, evaluate_sentiment, force)


def sentiment_hyperparameters(checkpoint: dict[str, Any]) -> dict[str, Any]:
    config = checkpoint["config"]
    pretrain = config.get("pretrain", {})
    return {"model": checkpoint["model_args"], "train": config["train"], "tokenizer": config["tokenizer"],
            "profile": config["profile"], **({"pretrain": pretrain} if pretrain.get("epochs") else {})}


# --- music: a prompt graph and a step graph, each exported in its own process ---------------

MUSIC_GRAPHS = {"prompt": "prompt.onnx", "step": "step.onnx"}
VOCABULARY_FILE = "vocabulary.json"


class CharLSTMStep(torch.nn.Module):
    """One generation step: token and clock [B, 1], state -> logits [B, V], new state."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, clock: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, h, c = self.model(token, clock, h, c)
        return logits[:, 0, :], h, c


def load_best(run_dir: Path, model_class: type[torch.nn.Module]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The run's best checkpoint as a model in eval mode, and the checkpoint (config, args)."""
    checkpoint = torch.load(run_dir / "best.pt", map_location="cpu", weights_only=False)
    model = model_class(**checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model.eval(), checkpoint


def load_music_model(run_dir: Path):
    from training.models.music import CharLSTM

    return load_best(run_dir, CharLSTM)


def export_music_graph(run_dir: Path, kind: str, path: Path) -> None:
    """Export one of the two music graphs; called in a fresh process by `export_music`."""
    model, _ = load_music_model(run_dir)
    batch, layers, hidden = 2, model.num_layers, model.hidden_size
    h0, c0 = torch.zeros(layers, batch, hidden), torch.zeros(layers, batch, hidden)
    batch_dim = torch.export.Dim("batch", min=1)
    state = {1: batch_dim}
    if kind == "prompt":
        tokens = torch.zeros(batch, 5, dtype=torch.int64)
        text = {0: batch_dim, 1: torch.export.Dim("sequence", min=1)}
        export_graph(model, (tokens, tokens.clone(), h0, c0), path, ["tokens", "clocks", "h0", "c0"],
                     ["logits", "h", "c"], {"tokens": text, "clocks": text, "h0": state, "c0": state})
        graph = relabel_output_axes(path, {"logits": {1: "sequence"}})
        check_symbolic_axes(graph, {"tokens": {0: "batch", 1: "sequence"}, "clocks": {0: "batch", 1: "sequence"},
                                    "h0": {1: "batch"}, "logits": {0: "batch", 1: "sequence"}, "h": {1: "batch"}})
    else:
        token = torch.zeros(batch, 1, dtype=torch.int64)
        graph = export_graph(CharLSTMStep(model).eval(), (token, token.clone(), h0, c0), path,
                             ["token", "clock", "h", "c"], ["logits", "h_next", "c_next"],
                             {"token": {0: batch_dim}, "clock": {0: batch_dim}, "h": state, "c": state})
        check_symbolic_axes(graph, {"token": {0: "batch"}, "clock": {0: "batch"}, "h": {1: "batch"},
                                    "logits": {0: "batch"}, "h_next": {1: "batch"}})


def check_music_parity(model, prompt: ort.InferenceSession, step: ort.InferenceSession, text_ids: np.ndarray,
                       text_clocks: np.ndarray, steps: int = 200) -> dict[str, float]:
    """ORT vs torch, everything to PARITY_ATOL: the prompt graph on random characters, clocks
    and states (a batch of 3 at length 37, batch 1 at length 1), and on real tunes
    (`text_ids` with their bar clock `text_clocks`, two streams at lengths 120 and 400); then
    200 chained step-graph runs over real tunes, each side carrying its own state, with the
    same likeliest next character at every step.

    Long runs read real ABC on purpose: on random characters the trained LSTM is driven far
    from anything it was trained on, where its state saturates and the two kernels' float32
    rounding grows along the recurrence (music/3: 4e-4 after 120 random characters), while on
    tunes it stays at the size of one step's rounding (7e-5 after 400 characters)."""
    rng = np.random.default_rng(0)
    worst = {"prompt_max_abs_diff": 0.0, "chained_steps_max_abs_diff": 0.0}

    def compare(key: str, expected, actual) -> None:
        for e, a in zip(expected, actual):
            worst[key] = max(worst[key], float(np.abs(e.numpy() - a).max()))

    layers, hidden = model.num_layers, model.hidden_size
    def run_torch(tokens, clocks, h0, c0):
        return model(*(torch.from_numpy(x) for x in (tokens, clocks, h0, c0)))

    for batch, length in ((3, 37), (1, 1)):
        tokens = rng.integers(0, model.embedding.num_embeddings, (batch, length))
        clocks = rng.integers(0, model.clock_embedding.num_embeddings, (batch, length))
        h0 = rng.standard_normal((layers, batch, hidden)).astype(np.float32) * 0.1
        c0 = rng.standard_normal((layers, batch, hidden)).astype(np.float32) * 0.1
        with torch.no_grad():
            expected = run_torch(tokens, clocks, h0, c0)
        compare("prompt_max_abs_diff", expected,
                prompt.run(None, {"tokens": tokens, "clocks": clocks, "h0": h0, "c0": c0}))
    half = len(text_ids) // 2

    def two_streams(values: np.ndarray, start: int, stop: int) -> np.ndarray:
        return np.stack([values[start:stop], values[half + start : half + stop]])

    for length in (120, 400):
        tokens, clocks = two_streams(text_ids, 0, length), two_streams(text_clocks, 0, length)
        zeros = np.zeros((layers, 2, hidden), dtype=np.float32)
        with torch.no_grad():
            expected = run_torch(tokens, clocks, zeros, zeros)
        compare("prompt_max_abs_diff", expected,
                prompt.run(None, {"tokens": tokens, "clocks": clocks, "h0": zeros, "c0": zeros}))

    tokens, clocks = two_streams(text_ids, 0, 10), two_streams(text_clocks, 0, 10)
    zeros = np.zeros((layers, 2, hidden), dtype=np.float32)
    _, h, c = prompt.run(None, {"tokens": tokens, "clocks": clocks, "h0": zeros, "c0": zeros})
    with torch.no_grad():
        _, th, tc = run_torch(tokens, clocks, zeros, zeros)
        step_model = CharLSTMStep(model)
        for index in range(10, 10 + steps):
            token, clock = two_streams(text_ids, index, index + 1), two_streams(text_clocks, index, index + 1)
            expected = step_model(torch.from_numpy(token), torch.from_numpy(clock), th, tc)
            _, th, tc = expected
            actual = step.run(None, {"token": token, "clock": clock, "h": h, "c": c})
            _, h, c = actual
            compare("chained_steps_max_abs_diff", expected, actual)
            if not np.array_equal(expected[0].numpy().argmax(-1), actual[0].argmax(-1)):
                raise AssertionError(f"step {index}: ONNX Runtime and torch disagree on the likeliest character")
    if max(worst.values()) > PARITY_ATOL:
        raise AssertionError(f"ONNX Runtime differs from torch: {worst} (limit {PARITY_ATOL})")
    return worst


def export_in_fresh_processes(task: str, graphs: dict[str, str], run_dir: Path,
                              staging: Path) -> dict[str, ort.InferenceSession]:
    """`python -m training.export <task> <graph> ...` once per graph (see the module's note),
    then a CPU session on each."""
    import subprocess
    import sys

    for kind, file in graphs.items():
        subprocess.run([sys.executable, "-m", "training.export", task, kind, str(run_dir), str(staging / file)],
                       check=True)
    return {kind: cpu_session(staging / file) for kind, file in graphs.items()}


def graph_specs(graphs: dict[str, str], staging: Path) -> dict[str, GraphSpec]:
    specs = {}
    for kind, file in graphs.items():
        inputs, outputs = signature(onnx.load(str(staging / file)))
        specs[kind] = GraphSpec(file=file, inputs=inputs, outputs=outputs)
    return specs


def export_music(run_dir: Path, model_dir: Path, version: str, force: bool = False) -> Manifest:
    from seqserve import bar_clock
    from seqserve.characters import CharVocabulary
    from training.data import music as music_data

    model, checkpoint = load_music_model(run_dir)
    config = checkpoint["config"]
    with staged(model_dir, force) as staging:
        shutil.copyfile(run_dir / VOCABULARY_FILE, staging / VOCABULARY_FILE)
        sessions = export_in_fresh_processes("music", MUSIC_GRAPHS, run_dir, staging)
        vocabulary = CharVocabulary.load(staging / VOCABULARY_FILE)
        text = music_data.tunes_text(music_data.load_splits()["validation"])
        text = vocabulary.clean(text)[0][:4000]
        text_ids, text_clocks = vocabulary.encode(text), bar_clock.BarClock().read_text(text)
        parity = check_music_parity(model, sessions["prompt"], sessions["step"], text_ids, text_clocks)
        graphs = graph_specs(MUSIC_GRAPHS, staging)

        meta = json.loads((music_data.data_dir() / "meta.json").read_text())
        lab = meta["sources"]["mit_lab_irish"]
        training_summary = json.loads((run_dir / "training.json").read_text())
        manifest = Manifest(
            name="music", version=version, task="music",
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            description="Character-level LSTM language model over folk tunes in ABC notation.",
            files=file_entries(staging, [*MUSIC_GRAPHS.values(), VOCABULARY_FILE]),
            graphs=graphs, opset=OPSET, torch_version=torch.__version__, onnx_version=onnx.__version__,
            preprocessing={"vocabulary": VOCABULARY_FILE, "tune_separator": "\n\n",
                           "unknown_characters": "NFKC-normalised, then dropped and reported",
                           "state": {"layers": model.num_layers, "hidden_size": model.hidden_size},
                           "bar_clock": {"module": "seqserve.bar_clock", "size": bar_clock.SIZE,
                                         "inputs": {"prompt": "clocks", "step": "clock"},
                                         "meaning": "what is left of the bar after each character, in quarters of L: "
                                                    "(0: outside a tune body, 1: unreadable metre)"}},
            data=DataSource(package=lab["package"], version=lab["version"], file=lab["member"], sha256=lab["sha256"],
                            license=lab["license"], splits=meta["splits"],
                            extra={"music21_corpus": meta["sources"]["music21_corpus"], "by_source": meta["by_source"],
                                   "validity_check_on_test_tunes": meta["validity_check_on_test_tunes"]}),
            hyperparameters={"model": checkpoint["model_args"], "train": config["train"], "profile": config["profile"]},
            training=training_summary,
            metrics={"parity": parity},
        )
        from training.evaluate import evaluate_music

        return publish(manifest, staging, model_dir, evaluate_music, force)


# --- translation: an encoder graph and a decoder-step graph, each in its own process ---------

TRANSLATE_GRAPHS = {"encoder": "encoder.onnx", "decoder_step": "decoder_step.onnx"}


def load_translate_model(run_dir: Path):
    from training.models.translate import Translator

    return load_best(run_dir, Translator)


def export_translate_graph(run_dir: Path, kind: str, path: Path) -> None:
    """Export one of the two translation graphs; called in a fresh process by `export_translate`."""
    from training.models.translate import TranslatorEncoder, TranslatorStep

    model, _ = load_translate_model(run_dir)
    batch, source = torch.export.Dim("batch", min=1), torch.export.Dim("source", min=1)
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    lengths = torch.tensor([5, 3])
    if kind == "encoder":
        export_graph(TranslatorEncoder(model).eval(), (ids, lengths), path, ["source_ids", "source_lengths"],
                     ["memory", "keys", "h0", "c0"],
                     {"source_ids": {0: batch, 1: source}, "source_lengths": {0: batch}})
        graph = relabel_output_axes(path, {"memory": {0: "batch", 1: "source"}, "keys": {0: "batch", 1: "source"}})
        check_symbolic_axes(graph, {"source_ids": {0: "batch", 1: "source"}, "source_lengths": {0: "batch"},
                                    "memory": {0: "batch", 1: "source"}, "keys": {0: "batch", 1: "source"},
                                    "h0": {0: "batch"}, "c0": {0: "batch"}})
    else:
        with torch.no_grad():
            memory, keys, h, c = model.encode(ids, lengths)
        mask = torch.arange(ids.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)
        previous = torch.tensor([2, 2])
        export_graph(TranslatorStep(model).eval(), (previous, h, c, memory, keys, mask), path,
                     ["previous_token", "h", "c", "memory", "keys", "source_mask"],
                     ["log_probs", "h_next", "c_next", "attention"],
                     {"previous_token": {0: batch}, "h": {0: batch}, "c": {0: batch}, "memory": {0: batch, 1: source},
                      "keys": {0: batch, 1: source}, "source_mask": {0: batch, 1: source}})
        graph = relabel_output_axes(path, {"attention": {0: "batch", 1: "source"}})
        check_symbolic_axes(graph, {"previous_token": {0: "batch"}, "memory": {0: "batch", 1: "source"},
                                    "source_mask": {0: "batch", 1: "source"}, "log_probs": {0: "batch"},
                                    "h_next": {0: "batch"}, "attention": {0: "batch", 1: "source"}})


def check_translate_parity(model, encoder: ort.InferenceSession, step: ort.InferenceSession, codec,
                           texts: list[str], steps: int = 30) -> float:
    """ORT vs torch: the encoder at batch 1 / length 1 and on a ragged batch (also against each
    text alone); then `steps` chained decoder steps on the ragged batch, each against torch's.
    Padded source positions must get exactly zero attention. Returns the largest difference."""
    from training.models.translate import source_mask

    worst = 0.0

    def compare(expected, actual) -> None:
        nonlocal worst
        for e, a in zip(expected, actual):
            worst = max(worst, float(np.abs(e.numpy() - a).max()))

    def encode_torch(ids: np.ndarray, lengths: np.ndarray):
        with torch.no_grad():
            return model.encode(torch.from_numpy(ids), torch.from_numpy(lengths))

    def run_encoder(ids: np.ndarray, lengths: np.ndarray):
        return encoder.run(None, {"source_ids": ids, "source_lengths": lengths})

    one = np.array([[codec.unk_id]]), np.array([1])
    compare(encode_torch(*one), run_encoder(*one))
    sources = codec.source_ids(texts)
    ids, lengths = codec.pad(sources)
    assert len(set(lengths.tolist())) > 1, "the ragged check needs texts of different lengths"
    ragged = run_encoder(ids, lengths)
    compare(encode_torch(ids, lengths), ragged)
    for row, source in enumerate(sources):  # padding must not change a sentence's memory
        alone = run_encoder(*codec.pad([source]))
        worst = max(worst, float(np.abs(alone[0][0] - ragged[0][row, : len(source)]).max()))

    memory, keys, h, c = ragged
    mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    torch_state = [torch.from_numpy(x) for x in (h, c)]
    torch_memory = [torch.from_numpy(x) for x in (memory, keys)]
    torch_mask = source_mask(torch.from_numpy(ids), torch.from_numpy(lengths))
    rng = np.random.default_rng(0)
    previous = np.full(len(sources), codec.bos_id, dtype=np.int64)
    for _ in range(steps):
        with torch.no_grad():
            expected = model.step(torch.from_numpy(previous), *torch_state, *torch_memory, torch_mask)
        actual = step.run(None, {"previous_token": previous, "h": h, "c": c, "memory": memory, "keys": keys,
                                 "source_mask": mask})
        compare(expected, actual)
        attention = actual[3]
        if np.any(attention[~mask] != 0) or not np.allclose(attention.sum(-1), 1, atol=1e-5):
            raise AssertionError("attention must be zero on padding and sum to 1 over the source")
        _, h, c, _ = actual
        torch_state = list(expected[1:3])
        previous = rng.integers(4, codec.vocab_size, len(sources))
    if worst > PARITY_ATOL:
        raise AssertionError(f"ONNX Runtime differs from torch by {worst:.2e} (> {PARITY_ATOL})")
    return worst


def check_decoding_matches_torch(model, encoder, step, codec, texts: list[str]) -> int:
    """Greedy decoding through the ONNX graphs (the service's beam search at beam 1) gives the
    same tokens as the torch model's greedy decoding; returns how many texts were compared."""
    from seqserve.translation import beam_search
    from training.train import greedy_translate

    sources = codec.source_ids(texts)
    onnx_ids = [hyp.ids for hyp in beam_search(encoder, step, codec, sources, beam_size=1, max_length=60)]
    torch_ids = greedy_translate(model, codec, sources, torch.device("cpu"), max_length=60)
    mismatched = [text for text, a, b in zip(texts, onnx_ids, torch_ids) if a != b]
    if mismatched:
        raise AssertionError(f"ONNX greedy decoding differs from torch on {len(mismatched)} texts, e.g. {mismatched[0]!r}")
    return len(texts)


def export_translate(run_dir: Path, model_dir: Path, version: str, force: bool = False) -> Manifest:
    from seqserve.translation import SubwordCodec
    from training.data import translate as translate_data

    model, checkpoint = load_translate_model(run_dir)
    config = checkpoint["config"]
    with staged(model_dir, force) as staging:
        shutil.copyfile(run_dir / TOKENIZER_FILE, staging / TOKENIZER_FILE)
        sessions = export_in_fresh_processes("translate", TRANSLATE_GRAPHS, run_dir, staging)
        codec = SubwordCodec.from_file(staging / TOKENIZER_FILE, config["tokenizer"]["max_source_tokens"])
        validation = translate_data.load_splits()["validation"]
        texts = [row["english"] for row in validation[:7]] + [
            "Hi.", "Tom, who lives in Boston, doesn't like the rain at all."]
        worst = check_translate_parity(model, sessions["encoder"], sessions["decoder_step"], codec, texts)
        compared = check_decoding_matches_torch(model, sessions["encoder"], sessions["decoder_step"], codec,
                                                [row["english"] for row in validation[:50]])
        graphs = graph_specs(TRANSLATE_GRAPHS, staging)

        meta = translate_data.load_meta()
        manifest = Manifest(
            name="translate", version=version, task="translate",
            created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            description="English -> Spanish: bidirectional LSTM encoder, LSTM decoder with Luong (general) attention, "
                        "one shared BPE vocabulary and tied embeddings.",
            files=file_entries(staging, [*TRANSLATE_GRAPHS.values(), TOKENIZER_FILE]),
            graphs=graphs, opset=OPSET, torch_version=torch.__version__, onnx_version=onnx.__version__,
            preprocessing={"tokenizer": TOKENIZER_FILE, "max_source_tokens": codec.max_source_tokens,
                           "special_tokens": {"pad": codec.pad_id, "unk": codec.unk_id, "bos": codec.bos_id,
                                              "eos": codec.eos_id},
                           "state": {"decoder_hidden": checkpoint["model_args"]["decoder_hidden"]}},
            data=DataSource(package=meta["package"], version=meta["version"], file=meta["file"], sha256=meta["sha256"],
                            license=meta["license"], splits=meta["splits"],
                            extra={k: meta[k] for k in ("seed", "split_pairs", "english_sentences", "pairs_kept")}),
            hyperparameters={"model": checkpoint["model_args"], "train": config["train"], "tokenizer": config["tokenizer"],
                             "profile": config["profile"]},
            training=json.loads((run_dir / "training.json").read_text()),
            metrics={"parity_max_abs_diff": worst, "greedy_decoding_matches_torch_on": compared},
        )
        from training.evaluate import evaluate_translate

        return publish(manifest, staging, model_dir, evaluate_translate, force)


GRAPH_EXPORTERS = {"music": (MUSIC_GRAPHS, export_music_graph), "translate": (TRANSLATE_GRAPHS, export_translate_graph)}

if __name__ == "__main__":
    import sys

    # python -m training.export <music|translate> <graph> <run_dir> <path>  (one graph per process)
    _, task, kind, run_dir, path = sys.argv
    graphs, exporter = GRAPH_EXPORTERS.get(task, ({}, None))
    if kind not in graphs:
        raise SystemExit("usage: python -m training.export {music|translate} GRAPH RUN_DIR PATH")
    exporter(Path(run_dir), kind, Path(path))
