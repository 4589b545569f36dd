"""Translation with the exported encoder and decoder-step graphs (numpy only): the codec
(text <-> subword ids) and beam search, shared by the service and by evaluation.

Beam search keeps, for each sentence, the `beam_size` best partial translations by total
log-probability; a translation that ends (emits [EOS]) is set aside with its score divided
by its length ** `length_penalty`, so that longer translations are not favoured or punished
for their length alone. With beam_size 1 this is greedy decoding.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
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


# Decoder-step inputs with a source-position axis (axis 1), padded to the batch's longest source.
SOURCE_AXIS_INPUTS = ("memory", "keys", "source_mask")

# Tokens per group in `top_tokens`: 12,000 tokens make 750 groups.
GROUP_SIZE = 16


def top_tokens(log_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's `k` likeliest tokens and their log-probabilities, best first: what a full
    sort of the row would put first (up to ties), for about a fifteenth of the cost of
    partitioning the whole row (1.6 against 25 ms for 128 rows of 12,000 on the 2-core CPU).
    The vocabulary is cut into groups (token t in group t mod G); a row's k best tokens lie in
    the k groups with the highest maxima (a group ranked above theirs holds a token at least as
    good), so only those groups' tokens are ranked."""
    rows, vocab = log_probs.shape
    k = min(k, vocab)
    groups = vocab // GROUP_SIZE
    if groups <= k:  # a small vocabulary: rank it whole
        ids = np.argsort(-log_probs, axis=1, kind="stable")[:, :k]
        return ids, np.take_along_axis(log_probs, ids, axis=1)
    whole = groups * GROUP_SIZE
    maxima = log_probs[:, :whole].reshape(rows, GROUP_SIZE, groups).max(axis=1)  # [rows, groups]
    best = np.argpartition(maxima, groups - k, axis=1)[:, groups - k:]
    ids = (best[:, :, None] + groups * np.arange(GROUP_SIZE)).reshape(rows, -1)
    if whole < vocab:  # the tokens past the last whole group are always ranked
        ids = np.concatenate([ids, np.broadcast_to(np.arange(whole, vocab), (rows, vocab - whole))], axis=1)
    values = np.take_along_axis(log_probs, ids, axis=1)
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(values, order, axis=1)


@dataclass(eq=False)
class BeamSearch:
    """One sentence's search inside a BeamBatch: its K live hypotheses are K consecutive rows
    of the batch. Each step records, per row, the parent row it came from, its token and its
    attention, so a finished hypothesis is read back by following the parents."""

    beam_size: int
    max_length: int
    source_length: int
    scores: np.ndarray  # [K] total log-probability of each live hypothesis
    parents: list[np.ndarray] = field(default_factory=list)  # per step: [K] beam each row extends
    tokens: list[np.ndarray] = field(default_factory=list)  # per step: [K] token each row chose
    attention: list[np.ndarray] = field(default_factory=list)  # per step: [K, source_length]
    finished: list[Hypothesis] = field(default_factory=list)
    result: Hypothesis | None = None

    @property
    def steps(self) -> int:
        return len(self.tokens)

    def history(self, beam: int) -> tuple[list[int], list[np.ndarray]]:
        """Tokens and attention rows that led to live hypothesis `beam`, oldest first."""
        ids, rows = [], []
        for step in range(self.steps - 1, -1, -1):
            ids.append(int(self.tokens[step][beam]))
            rows.append(self.attention[step][beam])
            beam = int(self.parents[step][beam])
        return ids[::-1], rows[::-1]

    def finish(self, beam: int, token: int | None, weights: np.ndarray, score: float, length_penalty: float) -> None:
        """Set aside live hypothesis `beam` extended by `token` (None: by [EOS]) as finished."""
        ids, rows = self.history(beam)
        rows.append(weights)
        if token is not None:
            ids.append(token)
        attention = np.stack(rows)[: len(ids)] if ids else np.zeros((0, self.source_length), dtype=np.float32)
        self.finished.append(Hypothesis(ids, attention, score, _normalise(score, len(ids) + 1, length_penalty)))


class BeamBatch:
    """Beam searches for many sentences advancing together: each step is ONE decoder-step run
    for every live hypothesis of every sentence. Sentences can join between steps (`add`),
    with their own beam size and max_length, and leave as soon as they are done, so a long
    sentence never holds up a short one and a new request need not wait for a running search.

    `encoder` and `step` are ONNX Runtime sessions (or anything with the same `run`). A
    sentence's result does not depend on the company it kept: padding the memory to the
    batch's longest source is masked out of the attention.
    """

    def __init__(self, encoder, step, codec: SubwordCodec, length_penalty: float = 1.0):
        self.encoder, self.step_graph, self.codec = encoder, step, codec
        self.length_penalty = length_penalty
        self.searches: list[BeamSearch] = []  # in row order
        self.rows: dict[str, np.ndarray] = {}  # the decoder-step inputs of every live row

    def __len__(self) -> int:
        return len(self.searches)

    def add(self, sources: list[list[int]], beam_size: int, max_length: int) -> list[BeamSearch]:
        """Encode the sources (one encoder run) and add their searches; returns them in order."""
        ids, lengths = self.codec.pad(sources)
        memory, keys, h, c = self.encoder.run(None, {"source_ids": ids, "source_lengths": lengths})
        mask = np.arange(ids.shape[1])[None, :] < lengths[:, None]
        # K rows per sentence; only the first is live at the start, so the K beams do not begin
        # as K copies of the same hypothesis.
        scores = np.full(beam_size, -np.inf)
        scores[0] = 0.0
        searches = [BeamSearch(beam_size, max_length, int(n), scores.copy()) for n in lengths.tolist()]
        new = {"memory": memory, "keys": keys, "source_mask": mask, "h": h, "c": c,
               "previous_token": np.full(len(sources), self.codec.bos_id, dtype=np.int64)}
        new = {name: np.repeat(x, beam_size, axis=0) for name, x in new.items()}
        self._append_rows(new)
        self.searches += searches
        return searches

    def _append_rows(self, new: dict[str, np.ndarray]) -> None:
        if not self.rows:
            self.rows = new
            return
        width = max(self.rows["memory"].shape[1], new["memory"].shape[1])
        for name in self.rows:
            old, extra = self.rows[name], new[name]
            if name in SOURCE_AXIS_INPUTS:  # pad to the longest source (zeros: masked out)
                old, extra = (x if x.shape[1] == width else np.pad(x, [(0, 0), (0, width - x.shape[1])]
                                                                    + [(0, 0)] * (x.ndim - 2)) for x in (old, extra))
            self.rows[name] = np.concatenate([old, extra])

    def step(self) -> list[BeamSearch]:
        """Advance every search by one token; returns the searches that finished (their
        `result` set), which have left the batch."""
        log_probs, h, c, weights = self.step_graph.run(None, self.rows)
        # A sentence's 2K best extensions are among its K beams' 2K likeliest tokens each.
        token_ids, token_scores = top_tokens(log_probs, 2 * max(s.beam_size for s in self.searches))
        offsets = np.cumsum([0] + [s.beam_size for s in self.searches])
        parent_rows = np.zeros(len(log_probs), dtype=np.int64)
        next_tokens = np.full(len(log_probs), self.codec.eos_id, dtype=np.int64)
        done: list[BeamSearch] = []

        groups: dict[int, list[int]] = {}
        for index, search in enumerate(self.searches):
            groups.setdefault(search.beam_size, []).append(index)
        for k, members in groups.items():  # the same K: one vectorised ranking for all of them
            rows = (offsets[members][:, None] + np.arange(k)).reshape(-1)
            width = min(2 * k, token_ids.shape[1])
            scores = np.stack([self.searches[i].scores for i in members])
            candidates = (scores[:, :, None]
                          + token_scores[rows, :width].reshape(len(members), k, width)).reshape(len(members), -1)
            candidate_tokens = token_ids[rows, :width].reshape(len(members), -1)
            # 2K candidates always leave K that do not end here.
            top = np.argsort(-candidates, axis=1, kind="stable")[:, : 2 * k]
            for member, index in enumerate(members):
                search, first = self.searches[index], offsets[index]
                step_weights = weights[first : first + k, : search.source_length]
                ranked = top[member]
                beams, tokens, scores_next = self._choose(search, candidates[member, ranked], ranked // width,
                                                          candidate_tokens[member, ranked], step_weights)
                if len(search.finished) >= k or not beams:
                    search.result = max(search.finished, key=lambda hyp: hyp.normalised)
                    done.append(search)
                    continue
                beams += [beams[0]] * (k - len(beams))  # unfilled rows: dead copies (score -inf)
                tokens += [self.codec.eos_id] * (k - len(tokens))
                scores_next += [-np.inf] * (k - len(scores_next))
                search.parents.append(np.array(beams))
                search.tokens.append(np.array(tokens))
                search.attention.append(step_weights[beams])
                search.scores = np.array(scores_next)
                parent_rows[first : first + k] = first + np.array(beams)
                next_tokens[first : first + k] = tokens

        self.rows["h"], self.rows["c"] = h[parent_rows], c[parent_rows]
        self.rows["previous_token"] = next_tokens
        if done:
            self._keep([s.result is None for s in self.searches])
        return done

    def discard(self, searches: list[BeamSearch]) -> None:
        """Take unfinished searches out of the batch (their requests went away)."""
        leaving = {id(s) for s in searches}
        self._keep([id(s) not in leaving for s in self.searches])

    def _keep(self, keep: list[bool]) -> None:
        if all(keep):
            return
        rows = np.repeat(keep, [s.beam_size for s in self.searches])
        self.searches = [s for s, kept in zip(self.searches, keep) if kept]
        if not self.searches:
            self.rows = {}
            return
        self.rows = {name: x[rows] for name, x in self.rows.items()}
        width = max(s.source_length for s in self.searches)  # the longest source may have left:
        for name in SOURCE_AXIS_INPUTS:                       # cut the padding it needed
            self.rows[name] = self.rows[name][:, :width]

    def _choose(self, search: BeamSearch, ranked_scores: np.ndarray, ranked_beams: np.ndarray,
                ranked_tokens: np.ndarray, step_weights: np.ndarray) -> tuple[list[int], list[int], list[float]]:
        """From the best 2K extensions (score, beam, token), best first: an end within the top K
        is a finished translation (as is a cut at max_length); the first K others live on."""
        k, last = search.beam_size, search.steps == search.max_length - 1
        beams, tokens, scores = [], [], []
        for rank, (score, beam, token) in enumerate(zip(ranked_scores.tolist(), ranked_beams.tolist(),
                                                         ranked_tokens.tolist())):
            if not np.isfinite(score):
                break
            if token == self.codec.eos_id or last:
                if rank < k:
                    search.finish(beam, None if token == self.codec.eos_id else token, step_weights[beam], score,
                                  self.length_penalty)
                continue
            beams.append(beam)
            tokens.append(token)
            scores.append(score)
            if len(beams) == k:
                break
        return beams, tokens, scores


def beam_search(encoder, step, codec: SubwordCodec, sources: list[list[int]], beam_size: int = 4,
                max_length: int = 100, length_penalty: float = 1.0) -> list[Hypothesis]:
    """Translate source id lists together; returns the best hypothesis of each (with
    beam_size 1 this is greedy decoding)."""
    batch = BeamBatch(encoder, step, codec, length_penalty)
    searches = batch.add(sources, beam_size, max_length)
    while batch:
        batch.step()
    return [search.result for search in searches]


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


def spelled_through(run: list[str], word: str) -> int | None:
    """Whether target pieces `run`, which attended to the source name `word`, are the model
    writing that name piece by piece (and likely garbling it: "Kowal" for "Kowalczyk") rather
    than translating, and if so how many of them to replace: up to the end of the run's last
    word that spells the name. A word spells it if it is made of several pieces and starts
    with a capital (or with a bare word-start piece: "▁ io b ono" for Siobhan). None where no
    word does, or where one is the name itself up to accents ("Berlín" for "Berlin" stays): a
    run of whole vocabulary words ("lunes" for "Mondays") or in lower case ("septiembre",
    "italia": Spanish writes days, months, languages and nationalities in lower case) is the
    model's own translation and is never overwritten. Words after the last spelling one stay:
    attention runs a step behind, so the word after a name often looks at it ("murió" in
    "Cesar Chavez murió en 1993")."""
    words: list[tuple[int, list[str]]] = []  # (index of its first piece in `run`, its pieces)
    for i, piece in enumerate(run):
        if piece.startswith("▁") or not words:
            words.append((i, []))
        words[-1][1].append(piece)
    through = None
    for first, parts in words:
        if len(parts) < 2:
            continue
        text = "".join(parts).lstrip("▁")
        if _folded(text) == _folded(word):
            return None
        if text[:1].isupper() or parts[0] == "▁":
            through = first + len(parts)
    return through


def _folded(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text.lower()) if not unicodedata.combining(ch))


def restore_copies(codec: SubwordCodec, source: Source, hypothesis: Hypothesis) -> list[str]:
    """The target pieces with numbers and unknown names copied from the source (the model
    spells those piece by piece and often garbles them): a target run that attended to one is
    replaced by the source's own text (a name only where the run spelled it back, and only
    through that spelling, see `spelled_through`). Then the set-aside characters go back in,
    after the piece that attended most to where they were."""
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
        through = spelled_through(pieces[low : high + 1], word)
        if through is None:
            continue  # the model translated it ("Mondays" -> "lunes"): its word stays
        out[low] = ("▁" if pieces[low].startswith("▁") else "") + word
        out[low + 1 : low + through] = [None] * (through - 1)

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
