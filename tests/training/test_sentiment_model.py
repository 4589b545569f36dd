"""The sentiment model's readouts respect each example's length: what it says about an
example does not depend on padding or on the other examples in the batch."""

from __future__ import annotations

import pytest
import torch

from training.models.sentiment import SentimentLSTM


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
