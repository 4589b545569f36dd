"""The committed tokenizer copes with how real users write, not only with the corpus's form."""

from __future__ import annotations

from seqserve.manifest import Manifest
from seqserve.sentiment import load_encoder
from tests.conftest import served


def encoder(models_dir):
    version = served("sentiment", models_dir)
    return load_encoder(version, Manifest.load(version))


def test_case_accents_and_html_breaks_are_normalised(models_dir):
    enc = encoder(models_dir)
    a = enc.token_ids(["A GREAT film.<br /><br />Loved it, cliché or not!"])[0]
    b = enc.token_ids(["a great film . loved it , cliche or not !"])[0]
    assert a == b
    assert enc.unk_id not in a


def test_padding_and_lengths(models_dir):
    enc = encoder(models_dir)
    ids, lengths = enc.encode(["good", "a much longer review than that"])
    assert ids.shape == (2, int(lengths.max()))
    assert lengths.tolist()[0] == 1
    assert (ids[0, 1:] == enc.pad_id).all()


def test_long_text_is_truncated_to_the_policy(models_dir):
    enc = encoder(models_dir)
    ids, lengths = enc.encode(["word " * 5000])
    assert lengths[0] == enc.truncation.max_tokens


def test_text_without_tokens_gets_one_unknown(models_dir):
    enc = encoder(models_dir)
    assert enc.token_ids(["\u200b"])[0] == [enc.unk_id]
