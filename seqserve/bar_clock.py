"""A bar clock for ABC text: after every character, how much of the current bar is left.

The music model reads this beside each character (an extra input of its graphs), so it does
not have to count note lengths in its recurrent state to know when a bar is full: that
counting is what most invalid generated tunes got wrong (bars an eighth too long or short).
Training computes the clock over the training text, generation over the prompt and then
character by character over what it samples, with this one class, so both see the same.

The reading follows ABC 2.1 as far as the lengths go: the unit length L: (or its default),
length suffixes (`A2`, `A/`, `A3/2`), broken rhythm (`A>B`, `A<B`, `A>>B`), tuplets
(`(3abc`, `(p:q:r`), chords (the first note's length; a suffix after `]` multiplies it),
and nothing for grace notes, annotations, decorations, bar lines and inline fields (whose
M: and L: take effect). It agrees with the strict check (`seqserve.abc.written_bars`) on
the bars of real tunes; a rare spelling it does not know counts as nothing rather than
failing.
"""

from __future__ import annotations

import functools
from fractions import Fraction

import numpy as np

from seqserve.abc import metre_quarter_length

# The id fed to the model: 0 outside a tune body (headers, between tunes), 1 in a body whose
# metre or unit cannot be read, then what is left of the bar, in steps of a quarter of the
# unit length L:, from -OVER_UNITS (a bar already too long) to MAX_UNITS.
OUTSIDE_BODY, NO_METRE = 0, 1
STEPS_PER_UNIT = 4
OVER_UNITS, MAX_UNITS = 4, 16
SIZE = 2 + (OVER_UNITS + MAX_UNITS) * STEPS_PER_UNIT + 1

NOTE_LETTERS = frozenset("ABCDEFGabcdefgzx")
_TUPLET_NOTES_IN_TIME_OF = {2: 3, 3: 2, 4: 3, 6: 2, 8: 3}  # (p -> q); others: 3 in compound metre, else 2
_CLOSERS = {'"': '"', "!": "!", "+": "+", "{": "}"}  # spans that add no time
_BROKEN = {">": (Fraction(3, 2), Fraction(1, 2)), ">>": (Fraction(7, 4), Fraction(1, 4)),
           "<": (Fraction(1, 2), Fraction(3, 2)), "<<": (Fraction(1, 4), Fraction(7, 4))}


def metre_length(value: str) -> Fraction | None:
    """A bar's length in whole notes for an M: value (C is 4/4, C| is 2/2), None if unreadable."""
    quarters = metre_quarter_length(value)
    return quarters / 4 if quarters else None


def clock_id(left: Fraction, unit: Fraction) -> int:
    """The id for `left` whole notes left in the bar, counted in quarters of `unit`."""
    return _step_id(round(left / unit * STEPS_PER_UNIT))


def _step_id(steps: int) -> int:
    steps = max(-OVER_UNITS * STEPS_PER_UNIT, min(MAX_UNITS * STEPS_PER_UNIT, steps))
    return 2 + OVER_UNITS * STEPS_PER_UNIT + steps


def _round_half_even(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) as Fraction rounds it (ties to even); denominator > 0."""
    quotient, remainder = divmod(numerator, denominator)
    if 2 * remainder > denominator or (2 * remainder == denominator and quotient % 2):
        quotient += 1
    return quotient


class BarClock:
    """Reads ABC one character at a time; `read` returns the clock id after that character."""

    def __init__(self) -> None:
        self._new_tune()

    def _new_tune(self) -> None:
        self.in_body = False
        self.metre: Fraction | None = None  # whole notes per bar
        self.unit: Fraction | None = None  # whole notes per unit length
        self.line = ""  # the current line so far
        self.field_line = False  # the current body line is a field (P:, M:, w: ...)
        self.elapsed = Fraction(0)  # closed notes of the current bar, in whole notes
        self.bars = 0  # bar lines read in this tune
        self.last_bar = Fraction(0)  # the length of the bar the last bar line closed
        self._reset_bar_state()

    def _reset_bar_state(self) -> None:
        self.note: Fraction | None = None  # the open note's base length (before its suffix)
        self.suffix = ""  # the open note's length suffix so far
        self.note_scale = Fraction(1)  # tuplet and broken-rhythm factors of the open note
        self.in_chord = False
        self.chord_has_note = False
        self.closer: str | None = None  # inside "...", !...!, +...+ or {...}: the closing char
        self.inline_field: str | None = None  # inside [M:...]: the text so far
        self.tuplet_spec: str | None = None  # "(3:2" while being read
        self.tuplet_left = 0
        self.tuplet_scale = Fraction(1)
        self.next_scale = Fraction(1)  # broken rhythm: the next note's factor
        self.last_note = Fraction(0)  # the last closed note's length (for broken rhythm)
        self.broken = ""

    # -- what the model sees -------------------------------------------------
    def current(self) -> int:
        """`clock_id(metre - elapsed - open note's length, unit)`, computed in integers: it
        runs after every character of every stream in a generation step, and the Fraction
        arithmetic took 70% of the reading (6.2 -> 2.6 us a character; the ids are the same,
        tests/seqserve/test_bar_clock.py)."""
        if not self.in_body:
            return OUTSIDE_BODY
        metre, unit = self.metre, self.unit
        if metre is None or unit is None:
            return NO_METRE
        elapsed = self.elapsed
        # left / unit * STEPS = (m/md - e/ed - o/od) * ud/un * STEPS, over one denominator.
        md, ed = metre.denominator, elapsed.denominator
        if self.note is None:
            numerator = (metre.numerator * ed - elapsed.numerator * md) * unit.denominator * STEPS_PER_UNIT
            denominator = md * ed * unit.numerator
        else:
            on, od = _open_length_parts(self.note, self.suffix, self.note_scale)
            numerator = ((metre.numerator * ed - elapsed.numerator * md) * od - on * md * ed) \
                * unit.denominator * STEPS_PER_UNIT
            denominator = md * ed * od * unit.numerator
        return _step_id(_round_half_even(numerator, denominator))

    def read(self, ch: str) -> int:
        self._read(ch)
        return self.current()

    def read_text(self, text: str) -> np.ndarray:
        """The clock id after each character of `text` (int64, one per character)."""
        return np.fromiter((self.read(ch) for ch in text), dtype=np.int64, count=len(text))

    # -- reading --------------------------------------------------------------
    def _open_length(self) -> Fraction:
        if self.note is None:
            return Fraction(0)
        return self.note * _suffix_factor(self.suffix) * self.note_scale

    def _close_note(self) -> None:
        if self.note is not None:
            self.last_note = self._open_length()
            self.elapsed += self.last_note
            self.note, self.suffix = None, ""

    def _read(self, ch: str) -> None:
        if ch == "\n":
            self._end_line()
            return
        line_start = self.line == ""
        self.line += ch
        if line_start and ch == "X":
            self._new_tune()
            self.line = ch
        if not self.in_body or self.field_line:
            return
        if len(self.line) == 2 and ch == ":" and self.line[0].isalpha() and self.line[0] not in NOTE_LETTERS:
            self.field_line = True  # "P:A", "M:3/4", "w:..." in the body: read at the line's end
            return
        if ch == "%":
            self.field_line = True  # a comment: nothing more on this line counts
            self._close_note()
            return
        self._read_body(ch)

    def _end_line(self) -> None:
        line, self.line = self.line, ""
        if line == "":  # a blank line ends the tune
            if self.in_body:
                self._new_tune()
            return
        if self.in_body and not self.field_line:
            self._close_note()
            self.broken, self.closer, self.inline_field = "", None, None  # none of these spans a line
            return
        self.field_line = False
        if len(line) >= 2 and line[1] == ":":
            self._field(line[0], line[2:])

    def _field(self, name: str, value: str) -> None:
        value = value.split("%")[0].strip()
        if name == "M":
            self.metre = metre_length(value) if value.lower() != "none" else None
        elif name == "L":
            try:
                self.unit = Fraction(value) if Fraction(value) > 0 else None
            except (ValueError, ZeroDivisionError):
                self.unit = None
        elif name == "K" and not self.in_body:
            self.in_body = True
            if self.unit is None and self.metre is not None:  # ABC's default unit length
                self.unit = Fraction(1, 16) if self.metre < Fraction(3, 4) else Fraction(1, 8)

    def _read_body(self, ch: str) -> None:
        if self.closer is not None:  # inside a span that adds no time
            if ch == self.closer:
                self.closer = None
            return
        if self.inline_field is not None:
            if ch == "]":
                field, self.inline_field = self.inline_field, None
                if len(field) >= 2 and field[1] == ":":
                    self._field(field[0], field[2:])
            else:
                self.inline_field += ch
            return
        if self.tuplet_spec is not None:
            if ch.isdigit() or (ch == ":" and self.tuplet_spec):
                self.tuplet_spec += ch
                return
            self._start_tuplet()
        if self.note is not None and (ch.isdigit() or ch == "/"):
            self.suffix += ch
            return
        if self.note is not None and ch in "',":
            return  # octave marks
        if ch in "<>":
            self._close_note()
            self.broken += ch
            return
        if self.broken:
            self._apply_broken()
        if ch in NOTE_LETTERS:
            self._start_note()
        elif ch == "Z":  # a multi-bar rest: as one full bar
            self._close_note()
            self.elapsed = self.metre or Fraction(0)
        elif ch in _CLOSERS:
            self._close_note()
            self.closer = _CLOSERS[ch]
        elif ch == "[":
            self._close_note()
            self.in_chord, self.chord_has_note = True, False
        elif ch == "]":
            if self.in_chord:  # a chord's suffix scales its first note
                self.in_chord = False
                if self.note is None and self.chord_has_note:
                    self.note, self.suffix, self.note_scale = self.last_note, "", Fraction(1)
                    self.elapsed -= self.last_note
        elif ch == "|" or (ch == ":" and not self.in_chord):
            self._close_note()
            if ch == "|" or self.line.endswith("::") and not self.line.endswith("|::"):  # `::` repeats both ways
                self.bars, self.last_bar = self.bars + 1, self.elapsed
                self.elapsed, self.in_chord = Fraction(0), False
                self.tuplet_left, self.next_scale = 0, Fraction(1)
        elif ch == "(":
            self._close_note()
            self.tuplet_spec = ""
        elif self.in_chord and self.line.endswith("[" + ch) and ch.isalnum():
            self.in_chord = False
            if ch.isalpha():
                self.inline_field = ch  # "[M:3/4]": read at its "]"
            # else "[1": the start of an ending, not a chord
        else:
            self._close_note()  # spaces, ties, slurs, decorations, accidentals: no time

    def _start_note(self) -> None:
        self._close_note()
        if self.unit is None:
            return
        if self.in_chord and self.chord_has_note:  # only a chord's first note takes time
            return
        self.chord_has_note = self.in_chord
        self.note, self.suffix = self.unit, ""
        self.note_scale = self.next_scale
        self.next_scale = Fraction(1)
        if self.tuplet_left:
            self.note_scale *= self.tuplet_scale
            self.tuplet_left -= 1

    def _start_tuplet(self) -> None:
        spec, self.tuplet_spec = self.tuplet_spec, None
        parts = spec.split(":")
        if not parts[0]:
            return  # a slur, not a tuplet
        p = int(parts[0])
        compound = self.metre is not None and self.metre.numerator % 3 == 0 and self.metre.numerator > 3
        q = int(parts[1]) if len(parts) > 1 and parts[1] else _TUPLET_NOTES_IN_TIME_OF.get(p, 3 if compound else 2)
        r = int(parts[2]) if len(parts) > 2 and parts[2] else p
        if p:
            self.tuplet_left, self.tuplet_scale = r, Fraction(q, p)

    def _apply_broken(self) -> None:
        before, after = _BROKEN.get(self.broken, (Fraction(1), Fraction(1)))
        self.broken = ""
        self.elapsed += self.last_note * (before - 1)
        self.next_scale *= after


def bar_lengths(tune: str) -> list[Fraction]:
    """The length of each bar of one tune as the clock counts it, in whole notes (bars that
    hold no time, as between `|` and `:` of `|:`, left out; the last bar needs no bar line)."""
    clock, lengths = BarClock(), []
    for ch in tune:
        bars = clock.bars
        clock.read(ch)
        if clock.bars > bars and clock.last_bar:
            lengths.append(clock.last_bar)
    clock.read("\n")
    if clock.elapsed:
        lengths.append(clock.elapsed)
    return lengths


def _open_length_parts(note: Fraction, suffix: str, scale: Fraction) -> tuple[int, int]:
    """An open note's length (note x suffix factor x scale) as (numerator, denominator), not reduced."""
    factor = _suffix_factor(suffix)
    return (note.numerator * factor.numerator * scale.numerator,
            note.denominator * factor.denominator * scale.denominator)


@functools.lru_cache(maxsize=256)  # a handful of suffixes ("2", "/", "3/2") make up nearly all
def _suffix_factor(suffix: str) -> Fraction:
    """`2` -> 2, `/` -> 1/2, `//` -> 1/4, `3/2` -> 3/2, `/4` -> 1/4."""
    if not suffix:
        return Fraction(1)
    numerator, slash, rest = suffix.partition("/")
    value = Fraction(int(numerator)) if numerator else Fraction(1)
    if not slash:
        return value
    slashes = 1 + len(rest) - len(rest.lstrip("/"))
    rest = rest.lstrip("/")
    if rest.isdigit() and int(rest):
        return value / int(rest) / 2 ** (slashes - 1)
    return value / 2 ** slashes
