"""Beam search over the committed translation graphs: its bookkeeping (scores, attention,
parents) agrees with re-scoring the answer token by token, and no sentence depends on the
others in its batch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from seqserve.manifest import Manifest, newest_version_dir
from seqserve.translation import SubwordCodec, beam_search

SENTENCES = ["I have never been to Spain.", "Where is the station?", "Tom bought three books yesterday.",
             "It's raining.", "Hello!", "She told me that she would come back before nine o'clock tonight."]


@pytest.fixture(scope="module")
def graphs(models_dir):
    model_dir = newest_version_dir(models_dir / "translate")
    manifest = Manifest.load(model_dir)
    sessions = {kind: ort.InferenceSession(str(model_dir / g.file), providers=["CPUExecutionProvider"])
                for kind, g in manifest.graphs.items()}
    codec = SubwordCodec.from_file(model_dir / manifest.preprocessing["tokenizer"],
                                   manifest.preprocessing["max_source_tokens"])
    return sessions["encoder"], sessions["decoder_step"], codec


def rescore(encoder, step, codec, source: list[int], target: list[int], ended: bool):
    """Teacher-force `target` through the graphs: total log-probability and attention rows."""
    ids, lengths = codec.pad([source])
    memory, keys, h, c = encoder.run(None, {"source_ids": ids, "source_lengths": lengths})
    mask = np.ones_like(ids, dtype=bool)
    total, rows, previous = 0.0, [], codec.bos_id
    for token in target + ([codec.eos_id] if ended else []):
        log_probs, h, c, attention = step.run(None, {"previous_token": np.array([previous]), "h": h, "c": c,
                                                     "memory": memory, "keys": keys, "source_mask": mask})
        total += float(log_probs[0, token])
        rows.append(attention[0])
        previous = token
    return total, np.array(rows[: len(target)]).reshape(len(target), len(source))


@pytest.mark.parametrize("beam_size", [1, 2, 4, 8])
def test_scores_and_attention_match_a_token_by_token_rescoring(graphs, beam_size):
    encoder, step, codec = graphs
    sources = codec.source_ids(SENTENCES)
    for source, hypothesis in zip(sources, beam_search(encoder, step, codec, sources, beam_size, max_length=40)):
        ended = len(hypothesis.ids) < 40
        total, attention = rescore(encoder, step, codec, source, hypothesis.ids, ended)
        assert hypothesis.score == pytest.approx(total, abs=1e-3)
        assert hypothesis.attention.shape == (len(hypothesis.ids), len(source))
        np.testing.assert_allclose(hypothesis.attention, attention, atol=1e-5)


def test_a_sentence_does_not_depend_on_its_batch(graphs):
    encoder, step, codec = graphs
    sources = codec.source_ids(SENTENCES)
    together = beam_search(encoder, step, codec, sources, beam_size=4, max_length=40)
    for source, batched in zip(sources, together):
        alone = beam_search(encoder, step, codec, [source], beam_size=4, max_length=40)[0]
        assert alone.ids == batched.ids
        assert alone.score == pytest.approx(batched.score, abs=1e-4)


def test_max_length_cuts_the_output(graphs):
    encoder, step, codec = graphs
    for beam_size in (1, 3):
        hypothesis = beam_search(encoder, step, codec, codec.source_ids([SENTENCES[-1]]), beam_size, max_length=3)[0]
        assert len(hypothesis.ids) == 3 and hypothesis.attention.shape[0] == 3
