"""The translator's stacked encoder reads each source as it would alone; the translation
ensemble: its next-token distribution is the mean of its members', its
states are theirs side by side, and an ensemble of one translator with itself is that
translator."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.translate.model import Translator, TranslatorEnsemble, source_mask  # noqa: E402


def members() -> list[Translator]:
    torch.manual_seed(0)
    return [Translator(50, 8, 6, 10, dropout=0.0).eval(), Translator(50, 8, 4, 7, dropout=0.0).eval()]


def inputs():
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]])
    lengths = torch.tensor([4, 2])
    return ids, lengths, source_mask(ids, lengths), torch.tensor([2, 2])


@torch.no_grad()
def test_the_ensemble_step_is_the_mean_of_its_members_probabilities():
    first, second = members()
    ensemble = TranslatorEnsemble([first, second]).eval()
    ids, lengths, mask, _ = inputs()
    tokens = [torch.tensor([2, 2]), torch.tensor([11, 12]), torch.tensor([13, 3])]
    memory, keys, h, c = ensemble.encode(ids, lengths)
    assert (memory.shape[-1], keys.shape[-1], h.shape[-1], c.shape[-1]) == (12 + 8, 10 + 7, 10 + 7, 10 + 7)
    for token in tokens:  # chained steps: each member must get its own slice of the state back
        log_probs, h, c, attention = ensemble.step(token, h, c, memory, keys, mask)
    alone = []
    for member in (first, second):
        m, k, hm, cm = member.encode(ids, lengths)
        for token in tokens:
            step = member.step(token, hm, cm, m, k, mask)
            hm, cm = step[1], step[2]
        alone.append(step)
    torch.testing.assert_close(log_probs.exp(), (alone[0][0].exp() + alone[1][0].exp()) / 2, atol=1e-6, rtol=0)
    torch.testing.assert_close(h, torch.cat([alone[0][1], alone[1][1]], -1))
    torch.testing.assert_close(c, torch.cat([alone[0][2], alone[1][2]], -1))
    torch.testing.assert_close(attention, (alone[0][3] + alone[1][3]) / 2)
    assert torch.all(attention[1, 2:] == 0), "padding gets no attention"


@torch.no_grad()
def test_an_ensemble_of_a_translator_with_itself_is_that_translator():
    first, _ = members()
    ensemble = TranslatorEnsemble([first, first]).eval()
    ids, lengths, mask, previous = inputs()
    alone_state, both_state = first.encode(ids, lengths), ensemble.encode(ids, lengths)
    alone = first.step(previous, alone_state[2], alone_state[3], alone_state[0], alone_state[1], mask)
    both = ensemble.step(previous, both_state[2], both_state[3], both_state[0], both_state[1], mask)
    torch.testing.assert_close(both[0], alone[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(both[3], alone[3])


@torch.no_grad()
def test_a_stacked_encoder_reads_each_source_of_a_ragged_batch_as_it_would_alone():
    torch.manual_seed(1)
    deep = Translator(50, 8, 6, 10, dropout=0.0, encoder_layers=2).eval()
    assert len(deep.upper_encoders) == 1 and len(Translator(50, 8, 6, 10).upper_encoders) == 0
    ids, lengths, _, _ = inputs()
    memory, keys, h, c = deep.encode(ids, lengths)
    short, _, short_h, short_c = deep.encode(ids[1:, :2], lengths[1:])
    torch.testing.assert_close(memory[1:, :2], short, atol=1e-6, rtol=0)
    torch.testing.assert_close(h[1:], short_h, atol=1e-6, rtol=0)
    torch.testing.assert_close(c[1:], short_c, atol=1e-6, rtol=0)
    one_layer = Translator(50, 8, 6, 10, dropout=0.0).eval()
    one_layer.load_state_dict({k: v for k, v in deep.state_dict().items() if not k.startswith("upper_encoders")})
    assert not torch.allclose(one_layer.encode(ids, lengths)[0], memory), "the second layer takes part"
