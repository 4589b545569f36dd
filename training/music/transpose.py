"""Transposing an ABC tune to another key: the same rhythm and melody, other pitches.

Training-time augmentation for the music model: a tune moved by `steps` scale degrees, with
the key signature of the key it lands in, is exactly the tune transposed (every note moves by
the same interval), because the key's scale maps onto the new key's scale degree by degree.
Notes with an explicit accidental keep their distance from the key signature (a lowered
seventh stays a lowered seventh). Annotations, decorations and inline fields are left alone;
tunes that change key mid-way are not transposed.
"""

from __future__ import annotations

import re

LETTERS = "CDEFGAB"
SEMITONES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}
NATURAL_FIFTHS = {"F": -1, "C": 0, "G": 1, "D": 2, "A": 3, "E": 4, "B": 5}  # major keys, circle of fifths
SHARP_ORDER, FLAT_ORDER = "FCGDAEB", "BEADGCF"
MODE_FIFTHS = {"": 0, "maj": 0, "ion": 0, "m": -3, "min": -3, "aeo": -3, "dor": -2, "phr": -4, "lyd": 1,
               "mix": -1, "loc": -5}
ACCIDENTALS = {"^^": 2, "^": 1, "=": 0, "_": -1, "__": -2}
SYMBOL = {value: symbol for symbol, value in ACCIDENTALS.items()}

_KEY = re.compile(r"^([A-G])([#b]?)\s*([A-Za-z]*)\s*$")
_FIELD_LINE = re.compile(r"^[A-Za-z]:")
# What is not music (left as is), or one note: accidental, letter, octave marks.
_TOKEN = re.compile(r'"[^"]*"|![^!]*!|\[[A-Za-z]:[^\]]*\]|(\^\^|\^|__|_|=)?([A-Ga-g])([,\']*)')


class Key:
    """A K: value as tonic, mode and the alteration the signature gives each letter."""

    def __init__(self, letter: str, alter: int, mode: str):
        self.letter, self.alter, self.mode = letter, alter, mode
        self.fifths = NATURAL_FIFTHS[letter] + 7 * alter + MODE_FIFTHS[mode[:3].lower()]
        self.alterations = {letter: 0 for letter in LETTERS}
        for letter in SHARP_ORDER[: max(self.fifths, 0)]:
            self.alterations[letter] = 1
        for letter in FLAT_ORDER[: max(-self.fifths, 0)]:
            self.alterations[letter] = -1

    @classmethod
    def parse(cls, value: str) -> "Key | None":
        match = _KEY.match(value.split("%", 1)[0].strip())
        if not match:
            return None
        letter, accidental, mode = match.groups()
        if mode[:3].lower() not in MODE_FIFTHS:
            return None
        return cls(letter, {"": 0, "#": 1, "b": -1}[accidental], mode)

    def moved(self, steps: int) -> "Key":
        """The key whose tonic is this key's scale degree `steps` away, in the same mode."""
        letter = LETTERS[(LETTERS.index(self.letter) + steps) % 7]
        return Key(letter, self.alterations[letter], self.mode)

    def spelled(self, original: str) -> str:
        """This key written like `original` (a K: value): tonic replaced, mode text kept."""
        head = original.split("%", 1)[0].strip()
        _, accidental, _ = _KEY.match(head).groups()
        rest = head[1 + len(accidental):]
        return self.letter + {0: "", 1: "#", -1: "b"}[self.alter] + rest


def transpose(tune: str, steps: int, max_fifths: int = 4) -> str | None:
    """`tune` moved by `steps` scale degrees (up if positive), or None when it cannot be: an
    unreadable or changing key, a landing key beyond `max_fifths` sharps or flats, or an
    accidental that would need a triple sharp or flat."""
    lines = tune.split("\n")
    key_line = next((i for i, line in enumerate(lines) if line.startswith("K:")), None)
    if key_line is None or any(line.startswith("K:") or "[K:" in line for line in lines[key_line + 1 :]):
        return None
    old = Key.parse(lines[key_line][2:])
    if old is None:
        return None
    new = old.moved(steps)
    if abs(new.fifths) > max_fifths:
        return None
    failed = False

    def move(match: re.Match) -> str:
        nonlocal failed
        if match.group(2) is None:  # an annotation, decoration or inline field
            return match.group(0)
        accidental, letter, marks = match.groups()
        octave = (5 if letter.islower() else 4) + marks.count("'") - marks.count(",")
        degree = octave * 7 + LETTERS.index(letter.upper()) + steps
        octave, name = divmod(degree, 7)
        name = LETTERS[name]
        if accidental is not None:  # keep its distance from the key signature
            value = new.alterations[name] + ACCIDENTALS[accidental] - old.alterations[letter.upper()]
            if value not in SYMBOL:
                failed = True
                return match.group(0)
            accidental = SYMBOL[value]
        written = name.lower() + "'" * (octave - 5) if octave >= 5 else name + "," * (4 - octave)
        return (accidental or "") + written

    body = [line if _FIELD_LINE.match(line) else _TOKEN.sub(move, line) for line in lines[key_line + 1 :]]
    if failed:
        return None
    return "\n".join([*lines[:key_line], "K:" + new.spelled(lines[key_line][2:]), *body])


def transpositions(tune: str, max_steps: int = 3, max_fifths: int = 4) -> list[str]:
    """Every transposition of `tune` by 1..max_steps scale degrees up or down that lands in a
    key of at most `max_fifths` sharps or flats."""
    moved = (transpose(tune, steps, max_fifths) for steps in range(-max_steps, max_steps + 1) if steps)
    return [t for t in moved if t is not None]
