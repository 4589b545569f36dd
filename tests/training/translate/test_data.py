"""Translation data: grouping by English sentence and a split that never shares one."""

from __future__ import annotations

from training.translate.data import group_pairs, normalise, split_groups, training_pairs


def test_pairs_are_grouped_by_english_sentence_and_normalised():
    content = ("Go.\tVe.\tattr 1\nGo.\tVete.\tattr 2\nGo.\tVe.\tattr 3\n"
               "Cafe\u0301  time. \tHora del  cafe\u0301.\tattr 4\n\tvacío\tattr 5\n")
    groups = group_pairs(content)
    assert list(groups) == ["Go.", "Café time."]
    assert groups["Go."] == {"spanish": ["Ve.", "Vete."], "attribution": ["attr 1", "attr 2"]}
    assert groups["Café time."]["spanish"] == ["Hora del café."]
    assert normalise(" a\u00a0 b ") == "a b"


def test_split_is_by_sentence_seeded_and_complete():
    english = [f"sentence {i}" for i in range(1000)]
    splits = split_groups(english, seed=3, validation_fraction=0.1, test_fraction=0.1)
    assert splits == split_groups(list(reversed(english)), seed=3, validation_fraction=0.1, test_fraction=0.1)
    assert sorted(sum(splits.values(), [])) == sorted(english)
    assert len(splits["test"]) == len(splits["validation"]) == 100
    rows = [{"english": "Go.", "spanish": ["Ve.", "Vete."]}]
    assert training_pairs(rows) == [("Go.", "Ve."), ("Go.", "Vete.")]
