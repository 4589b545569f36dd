"""Beam search over the committed translation graphs: its bookkeeping (scores, attention,
parents) agrees with re-scoring the answer token by token, and no sentence depends on the
others in its batch, nor on when it joined a running batch."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from seqserve.manifest import Manifest, newest_version_dir
from seqserve.translation import BeamBatch, SubwordCodec, beam_search, spelled_through

SENTENCES = ["I have never been to Spain.", "Where is the station?", "Tom bought three books yesterday.",
             "It's raining.", "Hello!", "She told me that she would come back before nine o'clock tonight."]


@pytest.fixture(scope="module")
def graphs(models_dir):
    model_dir = newest_version_dir(models_dir / "translate")
    manifest = Manifest.load(model_dir)
    sessions = {kind: ort.InferenceSession(str(model_dir / g.file), providers=["CPUExecutionProvider"])
                for kind, g in manifest.graphs.items()}
    codec = SubwordCodec.from_file(model_dir / manifest.preprocessing.tokenizer,
                                   manifest.preprocessing.max_source_tokens)
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


def test_sentences_joining_a_running_batch_get_what_they_get_alone(graphs):
    """Continuous batching: sentences join mid-search with their own beam size and
    max_length, and leave when done; each answer equals its search run alone."""
    encoder, step, codec = graphs
    sources = codec.source_ids(SENTENCES)
    settings = [(4, 40), (1, 40), (8, 12), (2, 40), (4, 5), (3, 40)]
    batch = BeamBatch(encoder, step, codec)
    searches, widths = [], set()
    for source, (beam_size, max_length) in zip(sources, settings):
        searches += batch.add([source], beam_size, max_length)
        for _ in range(2):  # two steps, then the next sentence joins
            if batch:
                batch.step()
                widths.add(batch.rows["memory"].shape[1] if batch else 0)
    while batch:
        batch.step()
    assert len(widths) > 2  # the padded source width followed who was in the batch
    for source, (beam_size, max_length), search in zip(sources, settings, searches):
        alone = beam_search(encoder, step, codec, [source], beam_size, max_length)[0]
        assert search.result.ids == alone.ids
        assert search.result.score == pytest.approx(alone.score, abs=1e-4)
        np.testing.assert_allclose(search.result.attention, alone.attention, atol=1e-5)


@pytest.mark.parametrize("vocab", [12_000, 12_007, 40, 7])
def test_top_tokens_are_what_a_full_sort_puts_first(vocab):
    from seqserve.translation import top_tokens

    rng = np.random.default_rng(vocab)
    log_probs = (rng.standard_normal((64, vocab)) * 3).astype(np.float32)
    log_probs[3, -5:] = 50.0 - np.arange(5)  # the best ones past the last whole group
    dead = np.full(vocab, -np.inf, dtype=np.float32)  # a row with two live tokens (ties at -inf past them)
    dead[[vocab - 1, 1]] = [-1.0, -2.0]
    log_probs[5] = dead
    for k in (1, 8, 16):
        ids, values = top_tokens(log_probs, k)
        expected = np.argsort(-log_probs, axis=1, kind="stable")[:, : min(k, vocab)]
        live = np.arange(64) != 5
        assert np.array_equal(ids[live], expected[live])
        assert np.array_equal(values, np.take_along_axis(log_probs, expected, axis=1))
        assert ids[5, :2].tolist() == [vocab - 1, 1][:k]


@pytest.mark.parametrize("run, name, through", [
    (["▁Ch", "ar", "ia", "▁murió"], "Chavez", 3),  # the next word looked at the name: it stays
    (["▁La", "▁", "ub", "icación"], "Xiomara", 4),  # a lead-in before the spelling goes with it
    (["▁Kow", "al", "▁Cz", "ik", "▁vive"], "Kowalczyk", 4),  # through the last word spelling it
    (["▁lunes"], "Mondays", None),  # a vocabulary word: the model's translation
    (["▁septiem", "bre"], "September", None),  # in lower case: Spanish months are
    (["▁Berl", "ín"], "Berlin", None),  # the name itself, with its accent
])
def test_a_copied_name_replaces_its_spelling_and_nothing_after_it(run, name, through):
    assert spelled_through(run, name) == through
