"""Word-level tokenizer built from the training split, optionally with words from GloVe."""

from __future__ import annotations

from training.tokenizer import build_word_tokenizer, with_extra_words


def test_extra_words_keep_every_id_and_become_known():
    tokenizer = build_word_tokenizer(["a good film", "a bad film"], vocab_size=100, min_frequency=1)
    extended, added = with_extra_words(tokenizer, ["film", "splendid", "dreadful"])
    assert added == 2
    assert all(extended.token_to_id(word) == index for word, index in tokenizer.get_vocab().items())
    assert extended.encode("A SPLENDID film!").tokens == ["a", "splendid", "film", "[UNK]"]
    assert tokenizer.encode("A SPLENDID film").tokens == ["a", "[UNK]", "film"]
