"""Runs read back out of the committed versions' graphs (`python -m training recover`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from seqserve.manifest import Manifest, newest_version_dir
from training import checkpoints
from training.onnx_export import PARITY_ATOL
from training.recover import _torch_gate_order, member_state, recover


@pytest.mark.parametrize("task", ["music", "sentiment", "translate"])
def test_a_committed_version_is_read_back_into_runs_that_reproduce_its_graphs(task, models_dir, tmp_path):
    model_dir = newest_version_dir(models_dir / task)
    manifest = Manifest.load(model_dir)
    result = recover(task, model_dir, tmp_path / "recovered")
    differences = [value for key, value in result.items() if key.endswith("max_abs_diff")]
    assert differences and max(differences) <= PARITY_ATOL
    members = manifest.hyperparameters.get("members", [manifest.hyperparameters])
    assert len(result["runs"]) == len(members)
    for run, settings in zip(map(Path, result["runs"]), members):
        best = checkpoints.load(run / checkpoints.BEST)
        assert best["model_args"] == settings["model"] and best["config"]["profile"] == settings["profile"]
        assert json.loads((run / "training.json").read_text())["recovered_from"] == f"models/{task}/{manifest.version}"
        for name in manifest.files:  # the tokenizer or vocabulary, as export and init_from read it
            if not name.endswith(".onnx"):
                assert (run / name).read_bytes() == (model_dir / name).read_bytes()
        with pytest.raises(SystemExit, match="cannot be resumed"):  # no optimizer state in a graph
            checkpoints.load_resumable(run / checkpoints.BEST, torch.device("cpu"))


def test_onnx_gate_order_is_put_back_in_torch_s():
    i, o, f, c = (np.full(2, value) for value in (1.0, 2.0, 3.0, 4.0))
    assert _torch_gate_order(np.concatenate([i, o, f, c])).tolist() == [1, 1, 3, 3, 4, 4, 2, 2]


class Tied(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(5, 3)
        self.output = torch.nn.Linear(3, 5, bias=False)
        self.output.weight = self.embedding.weight  # one tensor, two names in the state dict


def test_a_tied_weight_takes_its_twin_s_value_and_a_missing_or_misshapen_one_is_refused():
    model = Tied()
    weight = np.arange(15, dtype=np.float32).reshape(5, 3)
    state = member_state(model, {"members.1.embedding.weight": weight}, "members.1.")
    assert np.array_equal(state["output.weight"].numpy(), weight)
    with pytest.raises(ValueError, match="members.0.embedding.weight"):
        member_state(model, {"members.1.embedding.weight": weight}, "members.0.")
    with pytest.raises(ValueError, match=r"holds \(3, 5\)"):
        member_state(model, {"embedding.weight": weight.T}, "")
