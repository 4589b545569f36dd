"""What the exported manifest's description says the members were trained on."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from training.sentiment.export import trained_on  # noqa: E402


def member(**train) -> tuple[None, dict]:
    return None, {"config": {"train": train}}


def test_the_description_names_other_domains_and_refits_with_how_many_members_had_them():
    assert trained_on([member()]) == "trained on movie reviews"
    assert trained_on([member(), member(domains=["fine_foods"])]) == (
        "trained on movie reviews, and fine_foods reviews for 1 of 2 members")
    assert trained_on([member(refit=True), member(refit=True, domains=["fine_foods"])]) == (
        "trained on movie reviews (training and validation splits), and fine_foods reviews for 1 of 2 members")
    assert trained_on([member(refit=True), member()]) == (
        "trained on movie reviews (training and validation splits for 1 of 2 members)")
