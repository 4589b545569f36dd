"""The music data step: normalised tunes from both artifacts, split by tune, check calibrated."""

from __future__ import annotations

import json
import re

from tests.conftest import run_cli, smoke_cache
from training.music.data import default_unit_length, normalise


def test_normalise_keeps_one_header_layout():
    tune = ("X: 7\nT: The Enchanted Valley\nM: 2/4\nB: \"O'Neill's 1\"\nN: slow\nZ: transcriber\nK:Gm\n"
            "G3-A (Bcd=e) | f4 (g2dB) |!\n% a comment\nW: words\n")
    result = normalise(tune)
    assert result["abc"] == ("X:1\nT:The Enchanted Valley\nM:2/4\nL:1/16\nK:Gm\n"
                             "G3-A (Bcd=e) | f4 (g2dB) |")
    assert normalise("X:1\nT:no metre\nK:C\nabc|") is None


def test_default_unit_length():
    assert default_unit_length("6/8") == "1/8" and default_unit_length("2/4") == "1/16"
    assert default_unit_length("C|") == "1/8" and default_unit_length("none") is None


def test_data_step(tmp_path):
    run_cli("training", "data", "music", env=smoke_cache(tmp_path))
    meta = json.loads((tmp_path / "music" / "meta.json").read_text())
    assert meta["sources"]["mit_lab_irish"]["sha256"] == "df3782d5f7b5a2f4c66aa7c13f13008d5f48757b3f5f51620cd6c1ceb2c53023"
    assert meta["tunes_read"] > 3800
    for split in ("train", "validation", "test"):
        assert set(meta["by_source"][split]) == {"mit_lab_irish", "oneills1850", "ryansMammoth"}
    # The strict check must accept nearly all real tunes, or it is the check that is wrong.
    assert meta["validity_check_on_test_tunes"]["share_valid"] >= 0.9

    from training.splits import read_split

    bodies = [{re.sub(r"\s+", "", t["abc"].split("\nK:", 1)[1]) for t in read_split(tmp_path / "music" / f"{s}.jsonl.gz")}
              for s in ("train", "validation", "test")]
    assert not (bodies[0] & bodies[1]) and not (bodies[0] & bodies[2]) and not (bodies[1] & bodies[2])

    # The bar clock the model reads counts bars as the strict check measures them.
    from seqserve.abc import written_bars
    from seqserve.bar_clock import bar_lengths

    agreeing = total = 0
    for tune in read_split(tmp_path / "music" / "test.jsonl.gz"):
        clock, check = bar_lengths(tune["abc"]), [bar.length / 4 for bar in written_bars(tune["abc"])]
        agreeing += sum(a == b for a, b in zip(clock, check)) if len(clock) == len(check) else 0
        total += len(check)
    assert agreeing >= 0.995 * total
