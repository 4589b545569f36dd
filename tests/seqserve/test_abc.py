"""The strict tune check shared by music evaluation and the service."""

from __future__ import annotations

from seqserve.abc import check_tune, header_fields, split_tunes, written_bars

TUNE = """X:1
T:An Buachaill Dreoite
M:C|
L:1/8
K:G Major
GF|DGGB d2GB|d2GF Gc (3AGF|DGGB d2GB|dBcA F2GF|
DGGB d2GF|DGGF G2Ge|fgaf gbag|fdcA G2:|
GA|B2BG c2cA|d2GF G2GA|B2BG c2cA|d2DE F2GA|
B2BG c2cA|d^cde f2 (3def|g2gf gbag|fdcA G2:|"""


def test_a_real_tune_is_valid_with_its_pickups():
    check = check_tune(TUNE)
    assert check.valid, check.reason
    assert check.title == "An Buachaill Dreoite"
    assert check.full_bars == check.agreeing_bars == 15  # the split anacrusis counts as one bar


def test_each_required_header_is_needed():
    for header in ("T", "M", "L", "K"):
        broken = "\n".join(line for line in TUNE.splitlines() if not line.startswith(f"{header}:"))
        check = check_tune(broken)
        assert not check.valid and check.missing_headers == (header,)
        assert check.reason.startswith("headers:")


def test_bars_that_disagree_with_the_metre_fail():
    for changed in (TUNE.replace("M:C|", "M:3/4"), TUNE.replace("L:1/8", "L:1/4")):
        check = check_tune(changed)
        assert not check.valid and check.reason.startswith("bars:")


def test_one_odd_bar_is_tolerated():
    check = check_tune(TUNE.replace("d2GB|d2GF", "d3GB|d2GF", 1))
    assert check.valid and check.agreeing_bars == check.full_bars - 1


def test_unparseable_text_is_invalid_not_an_exception():
    check = check_tune("X:1\nT:x\nM:4/4\nL:1/8\nK:C\n" + "((((|||]]][[[ 9999 \\" * 3)
    assert not check.valid


def test_split_and_headers():
    tunes = split_tunes("% comment\nX:1\nT:A\nK:C\nabc|\n\nX:2\nT:B\nK:D\ndef|\n")
    assert [header_fields(t)["T"] for t in tunes] == ["A", "B"]


HEAD = "X:1\nT:t\nM:4/4\nL:1/8\nK:C\n"


def bar_lengths(body: str) -> list[str]:
    return [str(bar.length) for bar in written_bars(HEAD + body)]


def test_spellings_music21_mismeasures_are_measured_as_written():
    """Found calibrating the check on real tunes (O'Neill's, Ryan's): each was a bar of a
    good tune counted wrong."""
    assert bar_lengths("dBcA BGHc>c|cdef g4|") == ["4", "4"]  # H: fermata shorthand
    assert bar_lengths("(3{a}gfg) d4 e|cdef g4|") == ["7/2", "4"]  # grace note inside a tuplet
    assert bar_lengths("cdef g4|cdeA A2 A::e|cdef g4|") == ["4", "7/2", "1/2", "4"]  # double repeat
    assert bar_lengths('"^Home"cdef g4|[P:H]cdef g4|') == ["4", "4"]  # H in text is not a fermata


def test_a_first_ending_completes_the_opening_pickup():
    tune = HEAD + "G2|cdef g4|cdef g4|1 cdef g2:|2 cdef g4||\ncdef g4|cdef g4|cdef g4|cdef g4|cdef g4|"
    check = check_tune(tune)
    assert check.valid and check.agreeing_bars == check.full_bars
    shorter_pickup = check_tune(tune.replace("G2|", "G|", 1))  # now the first ending is a beat short
    assert shorter_pickup.agreeing_bars == shorter_pickup.full_bars - 1


def test_what_music21_cannot_build_is_invalid_as_its_full_parse_said():
    """The check builds every pitch and chord symbol as music21's translation would (without
    the translation): the two failures a full `converter.parse` found in generated tunes."""
    from music21 import converter

    double_natural = TUNE.replace("DGGB d2GB|d2GF", "DG==GB d2GB|d2GF", 1)  # music21 has no "nn"
    runaway_chord_symbol = TUNE.replace("|DGGB d2GB|dBcA", '|"DA,2SE34F4A2B2"DGGB d2GB|dBcA', 1)
    for tune in (double_natural, runaway_chord_symbol):
        check = check_tune(tune)
        assert not check.valid and check.reason.startswith("parse:"), check.reason
        try:
            converter.parse(tune, format="abc")
        except Exception:
            pass
        else:
            raise AssertionError("music21's full parse accepts it: the test tune no longer shows the failure")
