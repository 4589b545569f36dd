"""The sentiment model's readouts respect each example's length: what it says about an
example does not depend on padding or on the other examples in the batch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.sentiment.model import ReviewLanguageModel, SentimentEnsemble, SentimentLSTM


@pytest.mark.parametrize("attention_pooling", [False, True])
def test_an_example_scores_the_same_alone_and_in_a_ragged_batch(attention_pooling):
    torch.manual_seed(0)
    model = SentimentLSTM(100, 8, 6, attention_pooling=attention_pooling).eval()
    ids, lengths = torch.randint(2, 100, (3, 7)), torch.tensor([7, 3, 1])
    with torch.no_grad():
        batch = model(ids, lengths)
        for i, length in enumerate(lengths.tolist()):
            alone = model(ids[i : i + 1, :length], lengths[i : i + 1])
            torch.testing.assert_close(batch[i], alone[0], atol=1e-6, rtol=0)


def test_the_language_model_scores_an_example_the_same_alone_and_in_a_ragged_batch():
    torch.manual_seed(0)
    model = ReviewLanguageModel(SentimentLSTM(100, 8, 6), cutoffs=[20, 60], dropout=0.0).eval()
    ids, lengths = torch.randint(2, 100, (3, 7)), torch.tensor([7, 3, 1])
    with torch.no_grad():
        total, predicted = model(ids, lengths)
        alone = [model(ids[i : i + 1, :n], lengths[i : i + 1]) for i, n in enumerate(lengths.tolist())]
    assert predicted == 2 * (6 + 2 + 0) == sum(count for _, count in alone)
    torch.testing.assert_close(total, sum(loss for loss, _ in alone), atol=1e-4, rtol=0)


def test_language_model_pretraining_learns_the_words_of_its_text():
    """A few steps on one repeated phrase must make it much more likely in both directions."""
    torch.manual_seed(0)
    model = ReviewLanguageModel(SentimentLSTM(50, 8, 16, embedding_dropout=0.0), cutoffs=[10, 30], dropout=0.0)
    ids, lengths = torch.tensor([[5, 12, 33, 7, 41, 5, 12, 33]] * 4), torch.tensor([8] * 4)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    first = None
    for _ in range(60):
        optimizer.zero_grad()
        total, count = model(ids, lengths)
        (total / count).backward()
        optimizer.step()
        first = first if first is not None else (total / count).item()
    assert (total / count).item() < first / 4


def test_an_ensemble_answers_with_the_mean_of_its_members_probabilities():
    torch.manual_seed(0)
    members = [SentimentLSTM(100, 8, 6).eval(), SentimentLSTM(100, 8, 6, attention_pooling=True).eval()]
    ensemble = SentimentEnsemble(members).eval()
    ids, lengths = torch.randint(2, 100, (3, 7)), torch.tensor([7, 3, 1])
    with torch.no_grad():
        expected = torch.stack([torch.softmax(m(ids, lengths), -1) for m in members]).mean(0)
        torch.testing.assert_close(torch.softmax(ensemble(ids, lengths), -1), expected, atol=1e-6, rtol=0)
        alone = ensemble(ids[1:2, :3], lengths[1:2])
        torch.testing.assert_close(ensemble(ids, lengths)[1], alone[0], atol=1e-6, rtol=0)
