"""ABC notation helpers shared by training (evaluation, data) and the service (tune validity).

The strict validity check is one function, `check_tune`, so that the share of valid tunes
reported by `evaluate` is the same thing the service marks as `valid`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

REQUIRED_HEADERS = ("X", "T", "M", "L", "K")
# Tunes follow each other in the training text with one blank line between them (a tune
# itself has none), so the model learns where a tune ends.
TUNE_SEPARATOR = "\n\n"
MIN_BAR_AGREEMENT = 0.9
# The longest tune the service checks or turns into MIDI. music21's cost grows faster than the
# tune (measured on this project's 2-core CPU: 1,000 characters 0.2-0.4 s, 2,000 0.6-1.1 s,
# 4,000 2.4-3.4 s), so this keeps the worst accepted call near a second. The training tunes
# are far shorter: median 252 characters, 99th percentile 615; 2 of 3,071 are longer.
MAX_TUNE_CHARS = 2_000
_FIELD = re.compile(r"^([A-Za-z]):\s*(.*?)\s*$")


@dataclass(frozen=True)
class TuneCheck:
    valid: bool
    title: str | None
    missing_headers: tuple[str, ...]
    parsed: bool
    full_bars: int  # bars checked against M: and L: (pick-up and final bar excepted)
    agreeing_bars: int
    reason: str | None  # "<kind>: <detail>", kind one of headers, parse, bars

    @property
    def bar_agreement(self) -> float:
        return self.agreeing_bars / self.full_bars if self.full_bars else 1.0


def header_fields(tune: str) -> dict[str, str]:
    """The first value of each header field, read up to and including K:."""
    fields: dict[str, str] = {}
    for line in tune.splitlines():
        match = _FIELD.match(line)
        if not match:
            continue
        fields.setdefault(match.group(1), match.group(2))
        if match.group(1) == "K":
            break
    return fields


def split_tunes(text: str) -> list[str]:
    """Split ABC text into tunes, each starting at a line that begins with `X:`."""
    tunes, current = [], []
    for line in text.splitlines():
        if line.startswith("X:") and current:
            tunes.append("\n".join(current).strip())
            current = []
        if line.startswith("X:") or current:
            current.append(line)
    if current:
        tunes.append("\n".join(current).strip())
    return [t for t in tunes if t]


def complete_tunes(text: str) -> list[str]:
    """The tunes in generated text that are finished (followed by the blank line that ends a
    tune) and start with an X: header."""
    pieces = text.split(TUNE_SEPARATOR)[:-1]
    return [piece.strip("\n") for piece in pieces if piece.strip("\n").startswith("X:")]


def to_midi(tune: str) -> bytes:
    """A tune as a standard MIDI file (music21 writes it); raises ValueError if unreadable."""
    from music21 import converter, midi

    try:
        score = converter.parse(tune, format="abc")
        return midi.translate.music21ObjectToMidiFile(score).writestr()
    except Exception as error:  # music21 raises many types on malformed input
        raise ValueError(f"music21 could not turn this ABC into MIDI: {type(error).__name__}: {error}") from error


@dataclass(frozen=True)
class WrittenBar:
    length: Fraction  # as written, in quarter notes
    full: Fraction  # what M: asks for
    ends_repeat: bool  # its closing bar line repeats back (`:|`)


def _agreeing_bars(bars: list[WrittenBar], opening_pickup: Fraction) -> tuple[int, int]:
    """Count full bars and those whose length matches the metre. ABC writes an anacrusis as
    two short bars: one that ends a section and the pick-up that starts the next count as one
    bar when together they make a full bar; so does a short bar that repeats back to the
    tune's opening pick-up (a first ending, `|1 ... :|`) when the two make a full bar."""
    checked = agreeing = 0
    i = 0
    while i < len(bars):
        bar = bars[i]
        if bar.length < bar.full and i + 1 < len(bars) and bar.length + bars[i + 1].length == bar.full:
            checked, agreeing, i = checked + 1, agreeing + 1, i + 2
            continue
        checked += 1
        agreeing += int(bar.length == bar.full or (bar.ends_repeat and bar.length + opening_pickup == bar.full))
        i += 1
    return checked, agreeing


def metre_quarter_length(metre: str) -> Fraction | None:
    """Length of one bar in quarter notes for an M: value (C is 4/4, C| is 2/2)."""
    metre = {"C": "4/4", "C|": "2/2"}.get(metre.strip(), metre.strip())
    try:
        value = Fraction(metre)
    except (ValueError, ZeroDivisionError):
        return None
    return value * 4 if value > 0 else None


# Spellings music21's ABC reader mis-measures, rewritten before bars are measured (the tune
# itself is unchanged): the fermata shorthand `H` makes it drop the note that follows; a
# grace group right after a tuplet mark `(3{a}gfg` takes one of the tuplet's places; and the
# double repeat `::` is not read as a bar line.
_SKIPPED_OR_FERMATA = re.compile(r'"[^"\n]*"|![^!\n]*!|\[[A-Za-z]:[^\]\n]*\]|H(?=[\^_=]*[A-Ga-gz\[])')
_TUPLET_THEN_GRACE = re.compile(r"(\(\d(?::\d*){0,2})(\{[^}]*\})")
_DOUBLE_REPEAT = re.compile(r"(?<![|:]):(?::)+(?![|:])")


def measurable(tune: str) -> str:
    """The tune with those spellings rewritten: `!fermata!` for `H` (outside annotations,
    decorations and inline fields), the grace group before the tuplet mark, `:|:` for `::`."""
    lines = []
    for line in tune.splitlines():
        if not _FIELD.match(line):
            line = _SKIPPED_OR_FERMATA.sub(lambda m: "!fermata!" if m.group(0) == "H" else m.group(0), line)
            line = _TUPLET_THEN_GRACE.sub(r"\2\1", line)
            line = _DOUBLE_REPEAT.sub(":|:", line)
        lines.append(line)
    return "\n".join(lines)


def abc_handler(text: str):
    """music21's ABC handler after reading `text` (its tokens, parsed)."""
    from music21.abcFormat import ABCHandler

    handler = ABCHandler()
    handler.process(text)
    return handler


def written_bars(tune: str, handler=None) -> list[WrittenBar]:
    """Each bar as the bar lines divide the text, with its written length in quarter notes:
    grace notes count nothing, tuplets and broken rhythms count as played. music21's own
    measures cannot be used: it re-bars notes to fit the metre. `handler`: one that has read
    `measurable(tune)` already."""
    from music21.abcFormat import ABCChord, ABCMetadata, ABCNote

    handler = abc_handler(measurable(tune)) if handler is None else handler
    expected = metre_quarter_length(header_fields(tune).get("M", ""))
    bars = []
    for bar in handler.splitByMeasure():
        total = Fraction(0)
        for token in bar.tokens:
            if isinstance(token, ABCMetadata) and token.src.startswith("M:"):
                expected = metre_quarter_length(token.src[2:]) or expected
            elif isinstance(token, (ABCNote, ABCChord)) and not token.inGrace:
                length = Fraction(token.quarterLength).limit_denominator(256)
                if token.activeTuplet is not None:
                    length *= Fraction(token.activeTuplet.tupletMultiplier()).limit_denominator(256)
                total += length
        if total and expected:
            closing = getattr(bar, "rightBarToken", None)
            bars.append(WrittenBar(total, expected, closing is not None and ":" in closing.src))
    return bars


def music21_reads(tune: str, handler=None) -> None:
    """Raises where music21 cannot read the tune: its ABC handler over every token (which
    builds every key signature as the translation does), then every pitch and chord symbol
    built as music21's translation to a score builds them. The translation itself (a Score of
    Parts of Measures) is not run: it cost 85 ms of the check's 88 ms per tune, and over 827
    generated tunes (48 requests of 5,000 characters) the check with this gave the same verdict
    as with `converter.parse` on every one (774 valid). Each distinct pitch and chord name is
    built once, in token order: whether music21 can build one depends on the name alone.
    `handler`: one that has read `tune` already."""
    from music21 import common, harmony, pitch
    from music21.abcFormat import ABCChord, ABCNote

    handler = abc_handler(tune) if handler is None else handler
    # No key signature is built here: the handler's token processing has built each K: field
    # exactly as `getKeySignatureObject` (and so the translation) builds it.
    pitches_built: set[str] = set()
    chords_built: set[str] = set()
    for token in handler.tokens:
        if not isinstance(token, ABCNote):
            continue
        if token.chordSymbols:  # as abcFormat.translate cleans and builds it (a ValueError is skipped there)
            name = re.sub("[()]", "", token.chordSymbols[0].replace('"', "").strip())
            if name not in ("NC", "N.C.", "No Chord", "None") and not name.startswith(">") and name not in chords_built:
                chords_built.add(name)
                try:
                    harmony.ChordSymbol(common.cleanedFlatNotation(name))
                except ValueError:
                    pass
        for note in (token.subTokens if isinstance(token, ABCChord) else [token]):
            if isinstance(note, ABCNote) and note.pitchName and note.pitchName not in pitches_built:
                pitches_built.add(note.pitchName)
                pitch.Pitch(note.pitchName)


def check_tune(tune: str, min_bar_agreement: float = MIN_BAR_AGREEMENT) -> TuneCheck:
    """Strict validity: the X:, T:, M:, L: and K: headers; music21 reads it without error
    (`music21_reads`); and at least `min_bar_agreement` of the full bars last what M: and L: say."""
    fields = header_fields(tune)
    title = fields.get("T") or None
    missing = tuple(h for h in REQUIRED_HEADERS if h not in fields)
    if missing:
        return TuneCheck(False, title, missing, False, 0, 0, f"headers: missing {', '.join(missing)}")
    if metre_quarter_length(fields["M"]) is None:
        return TuneCheck(False, title, (), False, 0, 0, f"headers: M:{fields['M']} is not a metre")
    try:
        # One reading serves both where the bar measure needs no rewritten spelling (most
        # tunes; the reading is a third of the check's time).
        handler = abc_handler(tune)
        music21_reads(tune, handler)
        measured = measurable(tune)
        bars = written_bars(tune, handler if measured == tune else abc_handler(measured))
    except Exception as error:  # music21 raises many types on malformed input
        return TuneCheck(False, title, (), False, 0, 0, f"parse: music21 failed with {type(error).__name__}: {error}")
    if len(bars) < 3:
        return TuneCheck(False, title, (), True, 0, 0, "bars: fewer than three")
    opening_pickup = bars[0].length if bars[0].length < bars[0].full else Fraction(0)
    full, agreeing = _agreeing_bars(bars[1:-1], opening_pickup)
    if agreeing < min_bar_agreement * full:
        return TuneCheck(False, title, (), True, full, agreeing,
                         f"bars: only {agreeing} of {full} agree with M: and L:")
    return TuneCheck(True, title, (), True, full, agreeing, None)
