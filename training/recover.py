"""Training runs read back out of a committed version: `python -m training recover <task>`.

A session starts from a fresh checkout: `runs/` (the checkpoints) is not in the repository,
only `models/`. To fine-tune a served model (`train.init_from`: sentiment, translation) or add a
member to its ensemble (`export --ensemble-with`), recover its runs from its graphs first:

    python -m training recover translate          # the newest version -> runs/translate/recovered-<v>/member-<i>/

Each member's run folder gets what export and `train.init_from` read: `best.pt` (the
weights, the model's arguments and its config, as the manifest recorded them),
`training.json` (the member's training summary from the manifest) and the tokenizer or
vocabulary file. Optimizer and generator states are not in a graph, so a recovered run
cannot be resumed (`--resume` refuses it); it can be exported, fine-tuned or ensembled.

Where each weight is in a graph: torch's exporter keeps a parameter's name where the graph
uses it as is (embeddings, LSTM input and recurrent weights, most biases). The rest are
folded into unnamed constants, found through the nodes that read them, whose metadata names
the module that made them: an LSTM node's bias input holds both of torch's biases in ONNX's
gate order (input, output, forget, cell), and a MatMul's constant right-hand side is a
Linear's weight, transposed. The recovered model must then reproduce the committed graphs
to the export's tolerance (each task's own parity check), or nothing is written.
"""

from __future__ import annotations

import json
import re
import shutil
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from seqserve.manifest import Manifest
from training import checkpoints

WEIGHT_IH = re.compile(r"^(?P<module>.+)\.weight_ih_l(?P<layer>\d+)(?P<reverse>_reverse)?$")
# The exported wrappers (TranslatorEncoder, CharLSTMStep, ...) hold the model as `self.model`.
WRAPPER_PREFIX = "model."


def _torch_gate_order(onnx_gates: np.ndarray) -> np.ndarray:
    """ONNX stacks an LSTM's gates as input, output, forget, cell; torch as input, forget, cell, output."""
    i, o, f, c = np.split(onnx_gates, 4)
    return np.concatenate([i, f, c, o])


def _name_scope(node: onnx.NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            return json.loads(prop.value.replace("'", '"'))
    return []


def graph_parameters(path: Path) -> dict[str, np.ndarray]:
    """Every trained parameter an exported graph holds, by its torch name in the exported
    module (an ensemble's `members.<i>.` included; a wrapper's `model.` left out)."""
    graph = onnx.load(str(path)).graph
    constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    producer = {output: node for node in graph.node for output in node.output}
    found = {name: value for name, value in constants.items() if "." in name}  # named by the exporter

    def named_source(tensor: str) -> str | None:
        """The named weight a tensor is computed from (breadth first through its producers)."""
        queue, seen = deque([tensor]), set()
        while queue:
            name = queue.popleft()
            if name in seen:
                continue
            seen.add(name)
            if WEIGHT_IH.match(name):
                return name
            if name in producer:
                queue.extend(producer[name].input)
        return None

    for node in graph.node:
        if node.op_type == "LSTM":
            weight, bias = named_source(node.input[1]), node.input[3] if len(node.input) > 3 else ""
            if weight is None or bias not in constants:
                raise ValueError(f"{path.name}: LSTM node {node.name} reads no named weight or no constant bias")
            if constants[bias].shape[0] != 1:
                raise ValueError(f"{path.name}: bidirectional LSTM nodes are not read back (node {node.name})")
            match = WEIGHT_IH.match(weight)
            suffix = f"_l{match['layer']}{match['reverse'] or ''}"
            gates = constants[bias][0]
            half = len(gates) // 2
            found[f"{match['module']}.bias_ih{suffix}"] = _torch_gate_order(gates[:half])
            found[f"{match['module']}.bias_hh{suffix}"] = _torch_gate_order(gates[half:])
        elif node.op_type == "MatMul" and node.input[1] in constants and "." not in node.input[1]:
            scope = _name_scope(node)
            if len(scope) >= 2 and constants[node.input[1]].ndim == 2:
                found.setdefault(f"{scope[-2]}.weight", constants[node.input[1]].T)
    return {name.removeprefix(WRAPPER_PREFIX): value for name, value in found.items()}


def member_state(model: torch.nn.Module, parameters: dict[str, np.ndarray], prefix: str) -> dict[str, torch.Tensor]:
    """`model`'s state dict filled from a graph's parameters under `prefix` (`members.<i>.` or
    ""); a parameter tied to another (the same tensor) takes that one's value. Refuses a
    missing parameter or a shape that does not fit."""
    state = model.state_dict(keep_vars=True)
    by_tensor: dict[int, np.ndarray] = {}
    for key, tensor in state.items():
        if prefix + key in parameters:
            by_tensor[id(tensor)] = parameters[prefix + key]
    values, missing = {}, []
    for key, tensor in state.items():
        value = by_tensor.get(id(tensor))
        if value is None:
            missing.append(key)
            continue
        if tuple(value.shape) != tuple(tensor.shape):
            raise ValueError(f"{prefix}{key}: the graph holds {tuple(value.shape)}, the model wants {tuple(tensor.shape)}")
        values[key] = torch.from_numpy(np.array(value)).to(tensor.dtype)  # a copy: the graph's arrays are read-only
    if missing:
        raise ValueError(f"not found in the graphs: {', '.join(prefix + key for key in missing)}")
    return values


def write_run(run_dir: Path, model: torch.nn.Module, settings: dict[str, Any], summary: dict[str, Any],
              files: list[Path], source: str) -> None:
    """A run folder as training leaves one, from a recovered member."""
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {key: settings[key] for key in ("train", "tokenizer", "profile", "pretrain") if key in settings}
    config["model"] = settings["model"]
    # no "format": checkpoints.load_resumable refuses it, as it has no optimizer state to resume
    torch.save({"epoch": summary.get("best_epoch"), "model": model.state_dict(), "model_args": settings["model"],
                "config": config, "recovered_from": source}, run_dir / checkpoints.BEST)
    (run_dir / "training.json").write_text(json.dumps({**summary, "recovered_from": source}, indent=2) + "\n")
    for file in files:
        shutil.copyfile(file, run_dir / file.name)


def members_of(manifest: Manifest) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(settings, training summary) of each member of a version, in the graph's order."""
    settings, training = manifest.hyperparameters, manifest.training
    if "members" in settings:
        return list(zip(settings["members"], training["members"]))
    return [(settings, training)]


# Sentences of different lengths for the translation parity check (no data step needed).
TRANSLATION_TEXTS = ["Hi.", "Where is the station?", "Tom, who lives in Boston, doesn't like the rain at all.",
                     "The museum is closed on Mondays, so we will go on Tuesday instead.",
                     "I have never been to Spain.", "She said that she would come back before the end of the week."]
REVIEW_TEXTS = ["Loved it!", "A dull, overlong film that never finds its footing.",
                "The acting was fine but the plot made no sense at all , and the ending dragged on for ever .",
                "Not worth the price; it broke after two days."]  # check_parity adds a one-word text

# Real ABC for the music parity check (its long runs must read tunes, see its docstring), no
# data step needed: three traditional tunes, read twice for the two streams of 400 characters.
TUNES = """X:1
T:The Kesh
R:jig
M:6/8
L:1/8
K:G
|:G3 GAB|A3 ABd|edd gdd|edB dBA|G3 GAB|A3 ABd|edd gdB|AGF G3:|
|:BAB dBd|ege dBA|BAB dBG|ABA AGA|BAB dBd|ege dBd|gfg aga|bgf g3:|

X:2
T:Drowsy Maggie
R:reel
M:4/4
L:1/8
K:Edor
|:E2BE dEBE|E2BE AFDF|E2BE dEBE|BABc dAFD:|
|:d2fd c2ec|defg afge|d2fd c2ec|BABc dAFA|
d2fd c2ec|defg afge|afge fdec|BABc dAFD:|

X:3
T:The Butterfly
R:slip jig
M:9/8
L:1/8
K:Emin
|:B2E G2E F3|B2E G2E FED|B2E G2E F3|B2d d2B AFD:|
|:B2d e2f g3|B2d g2e dBA|B2d e2f g2a|b2a g2e dBA:|
|:B3 B2A G2A|B3 BAB dBA|B3 B2A G2A|B2d g2e dBA:|
"""


def _verify_translate(models: list[torch.nn.Module], model_dir: Path, manifest: Manifest) -> dict[str, float]:
    from seqserve.translation import SubwordCodec
    from training.onnx_export import cpu_session
    from training.translate.export import check_parity
    from training.translate.model import TranslatorEnsemble

    model = models[0] if len(models) == 1 else TranslatorEnsemble(models).eval()
    pre = manifest.preprocessing
    codec = SubwordCodec.from_file(model_dir / pre.tokenizer, pre.max_source_tokens)
    sessions = {kind: cpu_session(model_dir / spec.file) for kind, spec in manifest.graphs.items()}
    return {"parity_max_abs_diff": check_parity(model, sessions["encoder"], sessions["decoder_step"], codec,
                                                TRANSLATION_TEXTS)}


def _verify_sentiment(models: list[torch.nn.Module], model_dir: Path, manifest: Manifest) -> dict[str, float]:
    from seqserve.tokenization import TextEncoder, TruncationPolicy
    from training.onnx_export import cpu_session
    from training.sentiment.export import check_parity
    from training.sentiment.model import SentimentEnsemble

    model = models[0] if len(models) == 1 else SentimentEnsemble(models).eval()
    pre = manifest.preprocessing
    encoder = TextEncoder.from_file(model_dir / pre.tokenizer, TruncationPolicy(pre.max_tokens, pre.head_tokens))
    session = cpu_session(model_dir / manifest.graphs["classifier"].file)
    return {"parity_max_abs_diff": check_parity(model, session, encoder, REVIEW_TEXTS)}


def _verify_music(models: list[torch.nn.Module], model_dir: Path, manifest: Manifest) -> dict[str, float]:
    from seqserve import bar_clock
    from seqserve.characters import CharVocabulary
    from training.music.export import check_parity
    from training.onnx_export import cpu_session

    vocabulary = CharVocabulary.load(model_dir / manifest.preprocessing.vocabulary)
    text = vocabulary.clean(TUNES + "\n" + TUNES)[0]
    sessions = {kind: cpu_session(model_dir / spec.file) for kind, spec in manifest.graphs.items()}
    return check_parity(models[0], sessions["prompt"], sessions["step"], vocabulary.encode(text),
                        bar_clock.BarClock().read_text(text))


def _model_class(task: str) -> type[torch.nn.Module]:
    if task == "translate":
        from training.translate.model import Translator
        return Translator
    if task == "sentiment":
        from training.sentiment.model import SentimentLSTM
        return SentimentLSTM
    from training.music.model import CharLSTM
    return CharLSTM


VERIFY = {"translate": _verify_translate, "sentiment": _verify_sentiment, "music": _verify_music}


def recover(task: str, model_dir: Path, run_root: Path) -> dict[str, Any]:
    """Read every member of the version at `model_dir` back into a run folder under
    `run_root` (`member-<i>` for an ensemble's members, `run_root` itself for one model),
    once the recovered weights reproduce the version's fp32 graphs. Returns what was done."""
    model_dir = Path(model_dir)
    manifest = Manifest.load(model_dir)
    if manifest.task != task:
        raise SystemExit(f"{model_dir} holds a {manifest.task} model, not {task}")
    parameters: dict[str, np.ndarray] = {}
    for spec in manifest.graphs.values():  # the fp32 graphs: int8 ones hold quantized weights
        for name, value in graph_parameters(model_dir / spec.file).items():
            if name in parameters and not np.array_equal(parameters[name], value):
                raise ValueError(f"{name} differs between {model_dir.name}'s graphs")
            parameters[name] = value
    members = members_of(manifest)
    model_class = _model_class(task)
    models = []
    for index, (settings, _) in enumerate(members):
        model = model_class(**settings["model"]).eval()
        model.load_state_dict(member_state(model, parameters, f"members.{index}." if len(members) > 1 else ""))
        models.append(model)
    parity = VERIFY[task](models, model_dir, manifest)
    source = f"models/{task}/{manifest.version}"
    files = [model_dir / name for name in manifest.files if not name.endswith(".onnx")]
    run_dirs = [run_root / f"member-{i}" for i in range(len(members))] if len(members) > 1 else [run_root]
    for run_dir, model, (settings, summary) in zip(run_dirs, models, members):
        write_run(run_dir, model, settings, summary, files, source)
    return {"from": source, "runs": [str(path) for path in run_dirs], **parity}
