"""Translation with the exported encoder and decoder-step graphs (numpy only): the codec
(text <-> subword ids) and beam search, shared by the service and by evaluation.

Beam search keeps, for each sentence, the `beam_size` best partial translations by total
log-probability; a translation that ends (emits [EOS]) is set aside with its score divided
by its length ** `length_penalty`, so that longer translations are not favoured or punished
for their length alone. With beam_size 1 this is greedy decoding.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from seqserve.tokenization import PAD, UNK, pad_sequences

BOS, EOS = "[BOS]", "[EOS]"
SPECIAL_TOKENS = (PAD, UNK, BOS, EOS)  # ids 0..3, in this order


class SubwordCodec:
    """The one tokenizer both languages share, with the special ids the graphs expect."""

    def __init__(self, tokenizer: Tokenizer, max_source_tokens: int):
        self.tokenizer = tokenizer
        self.max_source_tokens = max_source_tokens
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = (tokenizer.token_to_id(t) for t in SPECIAL_TOKENS)
        if None in (self.pad_id, self.unk_id, self.bos_id, self.eos_id):
            raise ValueError(f"tokenizer must define {', '.join(SPECIAL_TOKENS)}")

    @classmethod
    def from_file(cls, path: Path, max_source_tokens: int) -> "SubwordCodec":
        return cls(Tokenizer.from_file(str(path)), max_source_tokens)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def source_ids(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids, cut to max_source_tokens; a text with no token becomes [UNK]."""
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [e.ids[: self.max_source_tokens] or [self.unk_id] for e in encodings]

    def target_ids(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        """Reference ids for training, cut to max_tokens, without BOS/EOS."""
        return [e.ids[:max_tokens] for e in self.tokenizer.encode_batch(texts, add_special_tokens=False)]

    def pad(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return pad_sequences(sequences, self.pad_id)

    def tokens(self, ids: list[int]) -> list[str]:
        """Subword strings as the vocabulary spells them ("▁" marks the start of a word)."""
        return [self.tokenizer.id_to_token(i) for i in ids]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


@dataclass
class Hypothesis:
    ids: list[int]  # target ids, without BOS and EOS
    attention: np.ndarray  # [len(ids), source length]: row i is where token i looked
    score: float  # total log-probability, EOS included
    normalised: float


def _normalise(score: float, length: int, length_penalty: float) -> float:
    return score / max(length, 1) ** length_penalty


def beam_search(encoder, step, codec: SubwordCodec, sources: list[list[int]], beam_size: int = 4,
                max_length: int = 100, length_penalty: float = 1.0) -> list[Hypothesis]:
    """Translate source id lists in one batch; returns the best hypothesis of each.

    `encoder` and `step` are ONNX Runtime sessions (or anything with the same `run`). The
    batch shrinks as sentences finish, so one long sentence does not make the others pay.
    """
    ids, lengths = codec.pad(sources)
    memory, keys, h, c = encoder.run(None, {"source_ids": ids, "source_lengths": lengths})
    mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
    batch, k = len(sources), beam_size

    def expand(x: np.ndarray) -> np.ndarray:  # [B, ...] -> [B*K, ...], K copies per sentence
        return np.repeat(x, k, axis=0)

    memory, keys, h, c, mask = (expand(x) for x in (memory, keys, h, c, mask))
    # Only the first copy of each beam is live at the start, so the K beams do not begin as
    # K copies of the same hypothesis.
    scores = np.full((batch, k), -np.inf)
    scores[:, 0] = 0.0
    tokens = np.zeros((batch, k, 0), dtype=np.int64)
    attention = np.zeros((batch, k, 0, ids.shape[1]), dtype=np.float32)
    previous = np.full(batch * k, codec.bos_id, dtype=np.int64)
    alive = np.arange(batch)  # which sentences the rows belong to, K rows each
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    results: list[Hypothesis | None] = [None] * batch

    for t in range(max_length):
        log_probs, h, c, weights = step.run(None, {"previous_token": previous, "h": h, "c": c, "memory": memory,
                                                   "keys": keys, "source_mask": mask})
        vocab = log_probs.shape[-1]
        candidates = (scores[:, :, None] + log_probs.reshape(len(alive), k, vocab)).reshape(len(alive), -1)
        # 2K candidates always leave K that do not end here.
        top = np.argpartition(-candidates, 2 * k, axis=1)[:, : 2 * k] if candidates.shape[1] > 2 * k \
            else np.tile(np.arange(candidates.shape[1]), (len(alive), 1))
        order = np.take_along_axis(candidates, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)

        next_beam = np.zeros((len(alive), k), dtype=np.int64)
        next_token = np.full((len(alive), k), codec.eos_id, dtype=np.int64)
        next_score = np.full((len(alive), k), -np.inf)
        keep = np.ones(len(alive), dtype=bool)
        step_weights = weights.reshape(len(alive), k, -1)
        for row, sentence in enumerate(alive):
            filled = 0
            for rank, flat in enumerate(top[row]):
                score = candidates[row, flat]
                if not np.isfinite(score):
                    break
                beam, token = divmod(int(flat), vocab)
                if token == codec.eos_id or t == max_length - 1:
                    # An end within the top K is a finished translation; a cut at max_length too.
                    if rank < k:
                        body = tokens[row, beam].tolist() + ([] if token == codec.eos_id else [token])
                        rows = np.concatenate([attention[row, beam], step_weights[row, beam][None]])[: len(body)]
                        finished[sentence].append(Hypothesis(body, rows, float(score),
                                                             _normalise(float(score), len(body) + 1, length_penalty)))
                    continue
                next_beam[row, filled], next_token[row, filled], next_score[row, filled] = beam, token, score
                filled += 1
                if filled == k:
                    break
            if len(finished[sentence]) >= k or filled == 0:
                results[sentence] = max(finished[sentence], key=lambda hyp: hyp.normalised)
                keep[row] = False

        # Follow each surviving hypothesis back to its parent beam.
        parent = (np.arange(len(alive))[:, None] * k + next_beam).reshape(-1)
        tokens = np.concatenate([np.take_along_axis(tokens, next_beam[:, :, None], axis=1), next_token[:, :, None]], 2)
        attention = np.concatenate([
            np.take_along_axis(attention, next_beam[:, :, None, None], axis=1),
            step_weights[np.arange(len(alive))[:, None], next_beam][:, :, None, :]], axis=2)
        h, c, scores, previous = h[parent], c[parent], next_score, next_token.reshape(-1)
        if not keep.all():
            rows_kept = np.repeat(keep, k)
            alive, tokens, attention, scores = alive[keep], tokens[keep], attention[keep], scores[keep]
            memory, keys, mask, h, c, previous = (x[rows_kept] for x in (memory, keys, mask, h, c, previous))
        if len(alive) == 0:
            break

    for sentence in range(batch):
        if results[sentence] is None:  # max_length reached with fewer than K finished
            results[sentence] = max(finished[sentence], key=lambda hyp: hyp.normalised)
    return [_trim(hyp, n) for hyp, n in zip(results, lengths.tolist())]


def _trim(hypothesis: Hypothesis, source_length: int) -> Hypothesis:
    hypothesis.attention = hypothesis.attention[:, :source_length]
    return hypothesis


@dataclass
class Source:
    """A text as the encoder reads it. Characters the tokenizer never saw in training (emoji,
    other scripts) would reach the model as [UNK], which it never learned; they are set aside
    instead and put back into the translation where attention says they belong."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]  # each id's character span in `text`
    set_aside: list[tuple[int, str]]  # (index of the id they followed, -1: the start; the characters)
    truncated: bool


def prepare_source(codec: SubwordCodec, text: str) -> Source:
    encoding = codec.tokenizer.encode(text, add_special_tokens=False)
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    set_aside: list[tuple[int, str, int, int]] = []
    for token_id, token, span in zip(encoding.ids, encoding.tokens, encoding.offsets):
        if token_id != codec.unk_id:
            ids.append(token_id)
            offsets.append(span)
            continue
        if ids and codec.tokenizer.id_to_token(ids[-1]) == "▁":  # the word-start mark of the unknown run
            ids.pop()
            offsets.pop()
        anchor = len(ids) - 1
        if set_aside and set_aside[-1][0] == anchor and not text[set_aside[-1][3] : span[0]].strip():
            _, _, first, _ = set_aside.pop()  # adjacent unknown characters travel together
            span = (first, span[1])
        set_aside.append((anchor, text[span[0] : span[1]], span[0], span[1]))
    truncated = len(ids) > codec.max_source_tokens
    ids, offsets = ids[: codec.max_source_tokens], offsets[: codec.max_source_tokens]
    kept = [(anchor, chars) for anchor, chars, _, _ in set_aside if anchor < len(ids)]
    return Source(text, ids or [codec.unk_id], offsets or [(0, 0)], kept, truncated)


@dataclass
class Translation:
    """One answer: the text, the subwords on both sides, and where each target subword looked."""

    translation: str
    source_tokens: list[str]
    target_tokens: list[str]
    attention: np.ndarray  # [len(target_tokens), len(source_tokens)], rows sum to 1
    source_truncated: bool


_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_SEPARATOR = {".", ",", ":", "/", "-"}


def _has_digit(piece: str | None) -> bool:
    return piece is not None and any(ch.isdigit() for ch in piece)


def _numeric_runs(pieces: list[str]) -> list[tuple[int, int]]:
    """(first, end) of each run of target pieces spelling a number: digit pieces, separators
    between them, and the lone word-start mark before them."""
    runs, i = [], 0
    while i < len(pieces):
        if not _has_digit(pieces[i]):
            i += 1
            continue
        first = i - 1 if i > 0 and pieces[i - 1] == "▁" else i
        while i + 1 < len(pieces) and (_has_digit(pieces[i + 1]) or (
                pieces[i + 1] in _SEPARATOR and i + 2 < len(pieces) and _has_digit(pieces[i + 2]))):
            i += 1
        runs.append((first, i + 1))
        i += 1
    return runs


def _unknown_names(codec: SubwordCodec, source: Source) -> list[tuple[int, int, str]]:
    """(first id, end id, word) of the names the vocabulary does not know: a capitalised word
    split into pieces, in neither case a token of its own."""
    tokens = codec.tokens(source.ids)
    starts = [i for i, t in enumerate(tokens) if t.startswith("▁")] + [len(tokens)]
    names = []
    for first, end in zip(starts, starts[1:]):
        end = next((i for i in range(first + 1, end) if not tokens[i].isalpha()), end)  # punctuation ends a word
        word = source.text[source.offsets[first][0] : source.offsets[end - 1][1]].strip()
        if (end - first >= 2 and word[:1].isupper() and word.isalpha()
                and codec.tokenizer.token_to_id("▁" + word) is None
                and codec.tokenizer.token_to_id("▁" + word.lower()) is None):
            names.append((first, end, word))
    return names


def restore_copies(codec: SubwordCodec, source: Source, hypothesis: Hypothesis) -> list[str]:
    """The target pieces with numbers and unknown names copied from the source (the model
    spells those piece by piece and often garbles them): a target run that attended to one is
    replaced by the source's own text. Then the set-aside characters go back in, after the
    piece that attended most to where they were."""
    pieces = codec.tokens(hypothesis.ids)
    if not pieces:
        return [chars for _, chars in source.set_aside]
    looked_at = hypothesis.attention.argmax(axis=1)
    out: list[str | None] = list(pieces)

    numbers = []
    for match in _NUMBER.finditer(source.text):
        ids = [i for i, (a, b) in enumerate(source.offsets) if a < match.end() and b > match.start()]
        if ids:
            numbers.append((ids[0], ids[-1] + 1, match.group()))
    previous: tuple[int, int] | None = None  # (end, number) of the last run replaced
    for first, end in _numeric_runs(pieces):
        votes = [k for i in range(first, end) if _has_digit(pieces[i])
                 for k, (a, b, _) in enumerate(numbers) if a <= looked_at[i] < b]
        if not votes:
            continue
        number = max(set(votes), key=votes.count)
        between = pieces[previous[0] : first] if previous else None
        if previous and previous[1] == number and all(p.strip("▁") in _SEPARATOR | {""} for p in between):
            out[previous[0] : end] = [None] * (end - previous[0])  # the model split one number in two
        else:
            out[first] = ("▁" if pieces[first].startswith("▁") else "") + numbers[number][2]
            out[first + 1 : end] = [None] * (end - first - 1)
        previous = (end, number)

    for first, end, word in _unknown_names(codec, source):
        hits = [i for i, j in enumerate(looked_at) if first <= j < end and out[i] is not None
                and pieces[i].strip("▁").isalpha()]
        if not hits:
            continue  # the model left it out; nothing to copy into
        low, high = hits[0], hits[-1]
        while low > 0 and not pieces[low].startswith("▁") and pieces[low - 1].strip("▁").isalpha():
            low -= 1  # widen to whole words
        while high + 1 < len(pieces) and not pieces[high + 1].startswith("▁") and pieces[high + 1].isalpha():
            high += 1
        if any(out[i] is None for i in range(low, high + 1)):
            continue
        out[low] = ("▁" if pieces[low].startswith("▁") else "") + word
        out[low + 1 : high + 1] = [None] * (high - low)

    for anchor, chars in reversed(source.set_aside):
        if anchor < 0:
            out.insert(0, chars + " ")
        elif anchor == len(source.ids) - 1:
            out.append(" " + chars)
        else:
            i = int(hypothesis.attention[:, anchor].argmax())
            while i + 1 < len(out) and out[i + 1] is not None and not out[i + 1].startswith("▁"):
                i += 1  # after the whole word
            out.insert(i + 1, " " + chars)
    return [piece for piece in out if piece is not None]


def describe(codec: SubwordCodec, source: Source, hypothesis: Hypothesis) -> Translation:
    text = "".join(restore_copies(codec, source, hypothesis)).replace("▁", " ")
    return Translation(" ".join(text.split()), codec.tokens(source.ids), codec.tokens(hypothesis.ids),
                       hypothesis.attention, source.truncated)
