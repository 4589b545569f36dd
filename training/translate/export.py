"""Translation export: the best checkpoint (or several runs' best, decoding together as one
ensemble) -> an encoder graph and a decoder-step graph, each exported in a fresh process, +
tokenizer.json + manifest, checked against torch (ragged sources, zero attention on padding,
ONNX greedy decoding = torch's), as a new version."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from seqserve.manifest import DataSource, Manifest
from seqserve.translation import SubwordCodec, beam_search
from training.checkpoints import load_best
from training.onnx_export import (ParityCheck, check_one_tokenizer,
                                  check_symbolic_axes, graph_specs, manifest, relabel_output_axes, staged_from_run,
                                  trained_as)
from training.onnx_export import export_graph as dynamo_export
from training.translate import data
from training.translate.evaluate import QUALITY, evaluate
from training.translate.model import (Translator, TranslatorEncoder, TranslatorEnsemble, TranslatorStep,
                                     greedy_translate, source_mask)
from training.versions import publish

GRAPHS = {"encoder": "encoder.onnx", "decoder_step": "decoder_step.onnx"}
TOKENIZER_FILE = "tokenizer.json"


def load_translator(run_dir: Path, ensemble_with: list[Path] = ()) -> tuple[Translator | TranslatorEnsemble,
                                                                              list[dict[str, Any]]]:
    """The run's best checkpoint as a model, or with `ensemble_with` the ensemble of it and
    those runs' (which must share its tokenizer); and every member's checkpoint."""
    run_dirs = [Path(run_dir), *map(Path, ensemble_with)]
    check_one_tokenizer(run_dirs, TOKENIZER_FILE)
    members = [load_best(path, Translator) for path in run_dirs]
    model = members[0][0] if len(members) == 1 else TranslatorEnsemble([m for m, _ in members]).eval()
    return model, [checkpoint for _, checkpoint in members]


def export_graph(run_dir: Path, kind: str, path: Path, ensemble_with: list[Path] = ()) -> None:
    """Export one of the two graphs (GRAPHS); `python -m training export-graph translate` runs
    it in a fresh process for `export`."""
    model, _ = load_translator(run_dir, ensemble_with)
    batch, source = torch.export.Dim("batch", min=1), torch.export.Dim("source", min=1)
    ids = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 0, 0]])
    lengths = torch.tensor([5, 3])
    if kind == "encoder":
        dynamo_export(TranslatorEncoder(model).eval(), (ids, lengths), path, ["source_ids", "source_lengths"],
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
        dynamo_export(TranslatorStep(model).eval(), (previous, h, c, memory, keys, mask), path,
                     ["previous_token", "h", "c", "memory", "keys", "source_mask"],
                     ["log_probs", "h_next", "c_next", "attention"],
                     {"previous_token": {0: batch}, "h": {0: batch}, "c": {0: batch}, "memory": {0: batch, 1: source},
                      "keys": {0: batch, 1: source}, "source_mask": {0: batch, 1: source}})
        graph = relabel_output_axes(path, {"attention": {0: "batch", 1: "source"}})
        check_symbolic_axes(graph, {"previous_token": {0: "batch"}, "memory": {0: "batch", 1: "source"},
                                    "source_mask": {0: "batch", 1: "source"}, "log_probs": {0: "batch"},
                                    "h_next": {0: "batch"}, "attention": {0: "batch", 1: "source"}})


def check_parity(model: Translator | TranslatorEnsemble, encoder: ort.InferenceSession,
                 step: ort.InferenceSession, codec, texts: list[str], steps: int = 30) -> float:
    """ORT vs torch: the encoder at batch 1 / length 1 and on a ragged batch (also against each
    text alone); then `steps` chained decoder steps on the ragged batch, each against torch's.
    Padded source positions must get exactly zero attention. Every output within PARITY_ATOL
    beyond PARITY_RTOL of its size (an LSTM's cell state grows; `beyond_tolerance`). Returns the
    largest difference."""
    parity = ParityCheck("max_abs_diff")

    def compare(expected, actual) -> None:
        parity.compare(expected, actual, "max_abs_diff")

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
        compare([alone[0][0]], [ragged[0][row, : len(source)]])

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
    parity.verify()
    return parity.worst["max_abs_diff"]


def check_decoding_matches_torch(model, encoder, step, codec, texts: list[str]) -> int:
    """Greedy decoding through the ONNX graphs (the service's beam search at beam 1) gives the
    same tokens as the torch model's greedy decoding; returns how many texts were compared."""
    sources = codec.source_ids(texts)
    onnx_ids = [hyp.ids for hyp in beam_search(encoder, step, codec, sources, beam_size=1, max_length=60)]
    torch_ids = greedy_translate(model, codec, sources, torch.device("cpu"), max_length=60)
    mismatched = [text for text, a, b in zip(texts, onnx_ids, torch_ids) if a != b]
    if mismatched:
        raise AssertionError(f"ONNX greedy decoding differs from torch on {len(mismatched)} texts, e.g. {mismatched[0]!r}")
    return len(texts)


def export(run_dir: Path, model_dir: Path, version: str, force: bool = False,
           ensemble_with: list[Path] = (), candidate: bool = False) -> Manifest:
    """Export the run's best checkpoint; with `ensemble_with`, graphs that decode with it and
    those runs' best checkpoints together (`TranslatorEnsemble`). A `candidate` is checked
    against torch like any export but not evaluated on the test split (no metrics, no INT8
    graphs): it is for choosing on the validation split (`evaluate(split="validation")`)."""
    model, checkpoints = load_translator(run_dir, ensemble_with)
    config = checkpoints[0]["config"]
    summaries = [json.loads((Path(path) / "training.json").read_text()) for path in [run_dir, *ensemble_with]]
    with staged_from_run("translate", run_dir, model_dir, [TOKENIZER_FILE], force, GRAPHS,
                         ensemble_with) as (staging, sessions):
        codec = SubwordCodec.from_file(staging / TOKENIZER_FILE, config["tokenizer"]["max_source_tokens"])
        validation = data.load_splits()["validation"]
        texts = [row["english"] for row in validation[:7]] + [
            "Hi.", "Tom, who lives in Boston, doesn't like the rain at all."]
        worst = check_parity(model, sessions["encoder"], sessions["decoder_step"], codec, texts)
        compared = check_decoding_matches_torch(model, sessions["encoder"], sessions["decoder_step"], codec,
                                                [row["english"] for row in validation[:50]])
        graphs = graph_specs(GRAPHS, staging)

        meta = data.load_meta()
        written = manifest(
            "translate", version, staging, [*GRAPHS.values(), TOKENIZER_FILE],
            description="English -> Spanish: bidirectional LSTM encoder, LSTM decoder with Luong (general) attention, "
                        "one shared BPE vocabulary and tied embeddings"
                        + (f"; {len(checkpoints)} such translators decoding together, their next-token "
                           "probabilities averaged." if len(checkpoints) > 1 else "."),
            graphs=graphs,
            preprocessing={"tokenizer": TOKENIZER_FILE, "max_source_tokens": codec.max_source_tokens,
                           "special_tokens": {"pad": codec.pad_id, "unk": codec.unk_id, "bos": codec.bos_id,
                                              "eos": codec.eos_id},
                           # an ensemble's members' states side by side
                           "state": {"decoder_hidden": sum(c["model_args"]["decoder_hidden"] for c in checkpoints)}},
            data=DataSource(package=meta["package"], version=meta["version"], file=meta["file"], sha256=meta["sha256"],
                            license=meta["license"], splits=meta["splits"],
                            extra={k: meta[k] for k in ("seed", "split_pairs", "english_sentences", "pairs_kept")}),
            **trained_as(checkpoints, summaries, "mean of the members' next-token probabilities"),
            metrics={"parity_max_abs_diff": worst, "greedy_decoding_matches_torch_on": compared},
        )
        return publish(written, staging, model_dir, None if candidate else evaluate, force, quality=QUALITY)
