"""Character vocabulary for the music model, shared by training and serving.

Unknown-character policy (the same at training and serving time): accents are folded
(NFKD, combining marks dropped) and the text NFKC-normalised, so "Über" reads "Uber" and
full-width letters become plain ones; characters still outside the vocabulary are dropped
and reported, never mapped to some other character the model would misread as music.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable
from pathlib import Path

import numpy as np


class CharVocabulary:
    def __init__(self, characters: Iterable[str]):
        self.characters = list(characters)
        self.index = {ch: i for i, ch in enumerate(self.characters)}
        if len(self.index) != len(self.characters) or any(len(ch) != 1 for ch in self.characters):
            raise ValueError("a vocabulary is a list of distinct single characters")

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharVocabulary":
        return cls(sorted({ch for text in texts for ch in text}))

    @classmethod
    def load(cls, path: Path) -> "CharVocabulary":
        return cls(json.loads(Path(path).read_text())["characters"])

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps({"characters": self.characters}, ensure_ascii=False, indent=0) + "\n")

    def __len__(self) -> int:
        return len(self.characters)

    def clean(self, text: str) -> tuple[str, list[str]]:
        """The text as the model can read it, and the characters that were dropped."""
        folded = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
        normalised = unicodedata.normalize("NFKC", folded)
        kept = "".join(ch for ch in normalised if ch in self.index)
        dropped = sorted({ch for ch in normalised if ch not in self.index})
        return kept, dropped

    def encode(self, text: str) -> np.ndarray:
        """Ids of a text already cleaned; raises KeyError on a character outside the vocabulary."""
        return np.array([self.index[ch] for ch in text], dtype=np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.characters[i] for i in ids)
