"""The bar clock the music model reads beside each character."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from seqserve.abc import written_bars
from seqserve.bar_clock import NO_METRE, OUTSIDE_BODY, SIZE, BarClock, bar_lengths, clock_id
from tests.seqserve.test_abc import TUNE

HEAD = "X:1\nT:t\nM:6/8\nL:1/8\nK:D\n"


def lengths(body: str, head: str = HEAD) -> list[Fraction]:
    return bar_lengths(head + body)


def test_note_lengths_as_abc_writes_them():
    assert lengths("A2 B/ c3/2 d// e/4 z x|") == [Fraction(13, 2) / 8]  # 2 + 1/2 + 3/2 + 1/4 + 1/4 + 1 + 1 units
    assert lengths("A>B c<d e>>f|") == [Fraction(6, 8)]  # broken rhythm keeps the pair's length
    assert lengths("(3ABc d2|(3:2:3ABc d2|") == [Fraction(4, 8)] * 2  # three in the time of two
    assert lengths("[CEG]2 [Ac]|") == [Fraction(3, 8)]  # a chord lasts as its first note, times its suffix
    assert lengths('{g}A"Am"B!trill!c .d~e(f)|') == [Fraction(6, 8)]  # graces, annotations, decorations: no time
    assert lengths("A^B_c=d'e,f|") == [Fraction(6, 8)]


def test_bar_lines_and_repeats():
    assert lengths("|:ABc def:|[1 ABc def:|[2 ABc d3||") == [Fraction(6, 8)] * 3
    assert lengths("ABc def::ABc|") == [Fraction(6, 8), Fraction(3, 8)]  # `::` ends a bar too


def test_fields_in_the_body_change_metre_and_unit():
    assert lengths("ABc def|\nM:3/4\nABc def|[L:1/4]AB|") == [Fraction(6, 8)] * 2 + [Fraction(2, 4)]
    clock = BarClock()
    clock.read_text(HEAD + "ABc|\nM:3/4\nA")
    assert clock.metre == Fraction(3, 4)
    clock.read_text("% a comment: ABC DEF\nB")
    assert clock.elapsed + clock._open_length() == Fraction(2, 8)


def test_ids_count_down_what_is_left_of_the_bar():
    clock = BarClock()
    ids = clock.read_text(HEAD + "AB c2|")
    assert (ids[: len(HEAD) - 1] == OUTSIDE_BODY).all()  # until the K: line ends
    left = [clock_id(Fraction(k, 8), Fraction(1, 8)) for k in (6, 5, 4, 4, 3, 2, 6)]
    assert ids[len(HEAD) - 1 :].tolist() == left  # "c" counts one unit until its "2" arrives
    assert clock.read_text("\n\n").tolist() == [clock_id(Fraction(6, 8), Fraction(1, 8)), OUTSIDE_BODY]  # a tune ends
    assert BarClock().read_text("X:1\nM:none\nK:C\nA")[-1] == NO_METRE
    assert clock_id(Fraction(-9), Fraction(1, 8)) == 2 and clock_id(Fraction(9), Fraction(1, 8)) == SIZE - 1


def test_any_text_reads_without_error_into_valid_ids():
    rng = np.random.default_rng(0)
    alphabet = list("ABCDEFGabcdefgzxZ|:[]()<>{}\"!+/0123456789'^_=,.-~ \n%MLK") + ["\n\n"]
    for _ in range(200):
        text = HEAD + "".join(rng.choice(alphabet, 300))
        ids = BarClock().read_text(text)
        assert ids.min() >= 0 and ids.max() < SIZE


def test_agrees_with_the_strict_check_on_a_real_tune():
    assert bar_lengths(TUNE) == [bar.length / 4 for bar in written_bars(TUNE)]


def fraction_id(clock: BarClock) -> int:
    """What `current()` computes in integers, the plain way: in Fractions."""
    if not clock.in_body:
        return OUTSIDE_BODY
    if clock.metre is None or clock.unit is None:
        return NO_METRE
    return clock_id(clock.metre - clock.elapsed - clock._open_length(), clock.unit)


def test_integer_clock_is_the_fraction_clock():
    # Tuplets, broken rhythm, odd suffixes, other metres and units: every state a text reaches.
    rng = np.random.default_rng(1)
    alphabet = list("ABCabcz|:[]()<>/0123456789 \n") + ["(3", "(5:4:3", "A3/2", "a//", "B/3", ">>", "[M:7/8]", "[L:3/16]"]
    texts = [TUNE] + [HEAD.replace("6/8", metre) + "".join(rng.choice(alphabet, 400))
                      for metre in ("6/8", "C", "C|", "3/4", "9/8", "2/4", "7/8", "5/4")]
    for text in texts:
        clock = BarClock()
        for character in text:
            assert clock.read(character) == fraction_id(clock), (text, character)
