"""Transposition (music augmentation): every note moves by the same interval, the rhythm and
the strict check's verdict stay, and keys it cannot handle are left alone."""

from __future__ import annotations

import pytest
from music21 import converter

from seqserve.abc import check_tune
from training.music.transpose import Key, transpose, transpositions

TUNE = """X:1
T:Accidentals, octaves, chords and grace notes
M:6/8
L:1/8
K:Ador
|:G,A,B, CDE|=F^FG ^^G_AB|[Ace]2 {g}a c'd'e'|"^Segno"!trill!a3 a2 z:|"""


def pitches(tune: str) -> list[int]:
    return [p.midi for n in converter.parse(tune, format="abc").recurse().notes for p in n.pitches]


@pytest.mark.parametrize("steps", [-3, -2, -1, 1, 2, 3])
def test_every_note_moves_by_the_same_interval(steps):
    moved = transpose(TUNE, steps)
    assert moved is not None
    before, after = pitches(TUNE), pitches(moved)
    assert len(before) == len(after) and len({b - a for a, b in zip(before, after)}) == 1
    assert moved.splitlines()[:4] == TUNE.splitlines()[:4]
    assert check_tune(moved).valid == check_tune(TUNE).valid
    assert '"^Segno"!trill!' in moved  # text and decorations are not notes


def test_keys_land_where_the_scale_says():
    assert Key.parse("G").moved(1).fifths == 3  # G major -> A major
    assert Key.parse("A Dorian").moved(-1).spelled("A Dorian") == "G Dorian"
    assert Key.parse("Em").moved(2).spelled("Em") == "Gm"  # E minor's third degree is G
    assert Key.parse("Hp") is None and Key.parse("D exp ^f") is None


def test_far_keys_and_key_changes_are_refused():
    assert transpose(TUNE.replace("K:Ador", "K:B"), 1) is None  # B major -> C# major: 7 sharps
    assert transpose(TUNE.replace("K:Ador", "K:B"), 3) is not None  # -> E major: 4 sharps
    assert transpose(TUNE + "\nK:G\nGAB|", 1) is None
    assert all(abs(Key.parse(t.split("K:")[1].splitlines()[0]).fifths) <= 4 for t in transpositions(TUNE))
