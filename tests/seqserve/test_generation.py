"""Sampling and the character vocabulary's unknown-character policy."""

from __future__ import annotations

import numpy as np

from seqserve.characters import CharVocabulary
from seqserve.generation import sample_ids


def test_top_k_1_is_argmax_and_seeds_repeat():
    logits = np.random.default_rng(0).standard_normal((4, 30))
    picks = sample_ids(logits, 1.0, 1, [np.random.default_rng(s) for s in range(4)])
    assert picks.tolist() == logits.argmax(axis=1).tolist()
    first = sample_ids(logits, 1.0, None, [np.random.default_rng(s) for s in range(4)])
    again = sample_ids(logits, 1.0, None, [np.random.default_rng(s) for s in range(4)])
    assert first.tolist() == again.tolist()


def test_a_row_does_not_depend_on_its_batch():
    logits = np.random.default_rng(1).standard_normal((3, 30))
    alone = sample_ids(logits[1:2], 0.8, 5, [np.random.default_rng(7)])
    together = sample_ids(logits, 0.8, 5, [np.random.default_rng(s) for s in (3, 7, 9)])
    assert together[1] == alone[0]


def test_top_k_limits_the_choice():
    logits = np.array([[0.0, 5.0, 4.0, 3.0, -1.0]])
    draws = {int(sample_ids(logits, 2.0, 2, [np.random.default_rng(s)])[0]) for s in range(200)}
    assert draws == {1, 2}


def test_unknown_characters_are_normalised_then_dropped():
    vocabulary = CharVocabulary("X:1\nABCabce|'")
    kept, dropped = vocabulary.clean("X:1\nABC|ＡＢ’é🎵")
    assert kept == "X:1\nABC|ABe"  # full-width letters fold to ASCII, é to e
    assert dropped == sorted({"’", "🎵"})
    assert vocabulary.decode(vocabulary.encode(kept)) == kept


def test_a_tiny_temperature_is_argmax_not_nan():
    logits = np.random.default_rng(2).standard_normal((3, 30)) * 50
    with np.errstate(invalid="raise"):  # no inf - inf, no nan
        picks = sample_ids(logits, 1e-300, None, [np.random.default_rng(s) for s in range(3)])
    assert picks.tolist() == logits.argmax(axis=1).tolist()


def test_reading_a_prompt_in_pieces_equals_reading_it_at_once():
    import onnxruntime as ort

    from seqserve.generation import read_prompt
    from tests.conftest import served

    version = served("music")
    session = ort.InferenceSession(str(version / "prompt.onnx"), providers=["CPUExecutionProvider"])
    vocabulary = CharVocabulary.load(version / "vocabulary.json")
    prompt = "X:1\nT:Pieces\nM:6/8\nL:1/8\nK:G\nGAB c2d|e2d cBA|" * 4
    whole = read_prompt(session, vocabulary, prompt, batch=2)
    state = None
    for start in range(0, len(prompt), 37):
        state = read_prompt(session, vocabulary, prompt[start:start + 37], batch=2, after=state)
    np.testing.assert_allclose(state.logits, whole.logits, atol=1e-4)
    np.testing.assert_allclose(state.h, whole.h, atol=1e-4)
    if whole.clocks is not None:
        assert [c.current() for c in state.clocks] == [c.current() for c in whole.clocks]
