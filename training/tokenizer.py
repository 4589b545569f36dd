"""Build tokenizers from a training split only.

Sentiment: word level (not subword) so that pretrained word vectors can initialise the embedding.
The normaliser lower-cases, folds accents and drops HTML line breaks, so that original-case
paragraphs (IMDB, real users) and lower-cased tokenised sentences (Rotten Tomatoes) meet
the same vocabulary. Translation: subword (BPE), below.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from seqserve.tokenization import PAD, UNK


def _pipeline(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Replace(Regex(r"<br\s*/?>"), " "),
            normalizers.NFKC(),
            normalizers.Lowercase(),
            normalizers.NFD(),
            normalizers.StripAccents(),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tokenizer


def build_word_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    tokenizer = _pipeline(Tokenizer(models.WordLevel(unk_token=UNK)))
    trainer = trainers.WordLevelTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[PAD, UNK], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def with_extra_words(tokenizer: Tokenizer, extra: Iterable[str]) -> tuple[Tokenizer, int]:
    """The same word-level tokenizer with `extra` words appended to its vocabulary (every
    existing id kept); and how many were new."""
    vocabulary = tokenizer.get_vocab()
    before = len(vocabulary)
    for word in extra:
        vocabulary.setdefault(word, len(vocabulary))
    return _pipeline(Tokenizer(models.WordLevel(vocab=vocabulary, unk_token=UNK))), len(vocabulary) - before


def words(texts: Iterable[str]) -> set[str]:
    """Every word the tokenizer's normaliser and pre-tokeniser produce for these texts."""
    tokenizer = _pipeline(Tokenizer(models.WordLevel(unk_token=UNK)))
    normalizer, pre_tokenizer = tokenizer.normalizer, tokenizer.pre_tokenizer
    seen: set[str] = set()
    for text in texts:
        seen.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)))
    return seen


def build_subword_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int) -> Tokenizer:
    """One BPE vocabulary for English and Spanish (translation).

    Case and accents are kept (they are part of the output); punctuation is split from
    words, and digits are single tokens, so that numbers are copied digit by digit rather
    than memorised. Spaces become the "▁" word-start mark, so decoding restores them.
    Characters never seen in training become [UNK].
    """
    from seqserve.translation import SPECIAL_TOKENS

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(),
        pre_tokenizers.Punctuation("isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tokenizer.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer
