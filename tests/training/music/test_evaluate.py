"""The copy measure of `evaluate music`: the share of 16-character windows found in a text,
and where in a tune the copied ones start."""

from __future__ import annotations

from training.music.evaluate import SPAN, copied_by_line, line_kinds, share_seen


def test_share_seen_counts_every_window_of_every_tune():
    training = "X:1\nT:Kesh\nM:6/8\nL:1/8\nK:G\n|GAG GAB|"
    seen = {training[i : i + SPAN] for i in range(len(training) - SPAN + 1)}
    copied = training[:SPAN + 3]  # 4 windows, all in the training text
    fresh = "X:1\nT:Nothing seen here\n"  # 9 windows, none
    assert share_seen([copied], seen) == 1.0
    assert share_seen([fresh], seen) == 0.0
    assert share_seen([copied, fresh], seen) == round(4 / 13, 4)
    assert share_seen(["too short"], seen) == 0.0  # no window at all


def test_line_kinds_title_headers_then_body():
    tune = "X:1\nT:Kesh\nM:6/8\nK:G\nT:not a title here\n|GAG|"
    kinds = line_kinds(tune)
    assert len(kinds) == len(tune)
    assert kinds[tune.index("X:")] == kinds[tune.index("M:")] == kinds[tune.index("K:")] == "headers"
    assert kinds[tune.index("Kesh")] == kinds[tune.index("T:")] == "title"
    assert kinds[tune.index("T:not")] == kinds[tune.index("|GAG")] == "body"  # after K:, a T: is part of the body


def test_copied_by_line_adds_up_to_the_share_seen():
    training = "X:1\nT:The Humours of Kesh\nM:6/8\nL:1/8\nK:G\n|GAG GAB|cBA BAG|"
    seen = {training[i : i + SPAN] for i in range(len(training) - SPAN + 1)}
    sample = "X:1\nT:The Humours of Ennis\nM:6/8\nL:1/8\nK:G\n|GAG GAB|cBA BAG|dBA|"
    by_line = copied_by_line([sample], seen)
    assert by_line["title"] > 0 and by_line["headers"] > 0 and by_line["body"] > 0
    assert round(sum(by_line.values()), 4) == share_seen([sample], seen)
    assert copied_by_line(["X:1\nT:Nothing seen here at all\n"], seen) == {"title": 0.0, "headers": 0.0, "body": 0.0}
