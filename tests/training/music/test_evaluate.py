"""The copy measure of `evaluate music`: the share of 16-character windows found in a text."""

from __future__ import annotations

from training.music.evaluate import SPAN, share_seen


def test_share_seen_counts_every_window_of_every_tune():
    training = "X:1\nT:Kesh\nM:6/8\nL:1/8\nK:G\n|GAG GAB|"
    seen = {training[i : i + SPAN] for i in range(len(training) - SPAN + 1)}
    copied = training[:SPAN + 3]  # 4 windows, all in the training text
    fresh = "X:1\nT:Nothing seen here\n"  # 9 windows, none
    assert share_seen([copied], seen) == 1.0
    assert share_seen([fresh], seen) == 0.0
    assert share_seen([copied, fresh], seen) == round(4 / 13, 4)
    assert share_seen(["too short"], seen) == 0.0  # no window at all
