"""Text -> padded id batches, the same way at training and at serving time.

The tokenizer itself (normalisation, pre-tokenisation, vocabulary) is a Hugging Face
`tokenizers` JSON file saved beside the model; this module adds the truncation policy and
the padding that the exported graph expects.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

PAD = "[PAD]"
UNK = "[UNK]"


@dataclass(frozen=True)
class TruncationPolicy:
    """Keep the first `head_tokens` and the last `max_tokens - head_tokens` tokens.

    Reviews often open with context and close with the verdict, so both ends matter; the
    bound also caps the recurrent work a single request can cost.
    """

    max_tokens: int
    head_tokens: int

    def __post_init__(self) -> None:
        if not 0 <= self.head_tokens <= self.max_tokens or self.max_tokens < 1:
            raise ValueError(f"bad truncation policy: {self}")

    def apply(self, ids: list[int]) -> list[int]:
        if len(ids) <= self.max_tokens:
            return ids
        tail = self.max_tokens - self.head_tokens
        return ids[: self.head_tokens] + (ids[-tail:] if tail else [])


def pad_sequences(sequences: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id lists into `(ids [B, T], lengths [B])` int64 arrays, the graphs' inputs."""
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    ids = np.full((len(sequences), int(lengths.max(initial=1))), pad_id, dtype=np.int64)
    for row, sequence in enumerate(sequences):
        ids[row, : len(sequence)] = sequence
    return ids, lengths


class TextEncoder:
    """Wraps a `tokenizers.Tokenizer` and turns texts into `(input_ids, lengths)` arrays."""

    def __init__(self, tokenizer: Tokenizer, truncation: TruncationPolicy):
        self.tokenizer = tokenizer
        self.truncation = truncation
        self.pad_id = tokenizer.token_to_id(PAD)
        self.unk_id = tokenizer.token_to_id(UNK)
        if self.pad_id is None or self.unk_id is None:
            raise ValueError(f"tokenizer must define {PAD} and {UNK}")

    @classmethod
    def from_file(cls, path: Path, truncation: TruncationPolicy) -> "TextEncoder":
        return cls(Tokenizer.from_file(str(path)), truncation)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        encodings = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        # A text with no token at all (only symbols the normaliser drops) still gets one
        # step, so that every example has a defined readout.
        return [self.truncation.apply(e.ids) or [self.unk_id] for e in encodings]

    def pad(self, sequences: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        return pad_sequences(sequences, self.pad_id)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.pad(self.token_ids(texts))
