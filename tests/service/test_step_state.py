"""The generation state kept on the session's device through IOBinding gives exactly what
plain runs with host arrays give, through joins and leaves (here with the CPU as the device;
on a GPU the same code keeps h and c in GPU memory)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from seqserve import bar_clock
from seqserve.characters import CharVocabulary
from seqserve.generation import read_prompt
from seqserve.manifest import Manifest
from service.step_state import StepState
from tests.conftest import served


def test_bound_state_matches_plain_runs_through_joins_and_leaves(models_dir):
    model_dir = served("music", models_dir)
    manifest = Manifest.load(model_dir)
    prompt, step = (ort.InferenceSession(str(model_dir / manifest.graphs[g].file), providers=["CPUExecutionProvider"])
                    for g in ("prompt", "step"))
    vocabulary = CharVocabulary.load(model_dir / manifest.preprocessing.vocabulary)
    rng = np.random.default_rng(0)

    bound = StepState(step, "cpu")
    plain = read_prompt(prompt, vocabulary, "X:1\n", batch=3)
    bound.append(read_prompt(prompt, vocabulary, "X:1\n", batch=3))
    for n in range(30):
        if n == 10:  # two rows join
            joining = read_prompt(prompt, vocabulary, "X:1\nT:The Kesh\n", batch=2)
            bound.append(joining)
            plain.logits = np.concatenate([plain.logits, joining.logits])
            plain.h, plain.c = (np.concatenate([a, b], axis=1) for a, b in ((plain.h, joining.h), (plain.c, joining.c)))
        if n == 20:  # rows 0 and 3 leave
            keep = np.array([1, 2, 4])
            bound.keep(keep)
            plain.logits, plain.h, plain.c = plain.logits[keep], plain.h[:, keep], plain.c[:, keep]
        ids = rng.integers(0, len(vocabulary), (len(bound), 1))
        clock = rng.integers(0, bar_clock.SIZE, (len(bound), 1)) if bound.reads_clock else None
        bound.step(ids, clock)
        feeds = {"token": ids, "h": plain.h, "c": plain.c} | ({"clock": clock} if bound.reads_clock else {})
        plain.logits, plain.h, plain.c = step.run(None, feeds)
        np.testing.assert_array_equal(bound.logits, plain.logits)
    np.testing.assert_array_equal(bound.host().h, plain.h)
    bound.keep(np.arange(0))
    assert len(bound) == 0
