"""Pieces that make a bidirectional LSTM export to ONNX as plain LSTM nodes.

`pack_padded_sequence` does not export with the dynamo exporter, so the backward direction
is a second unidirectional LSTM that reads each example reversed within its own length
(padding stays at the end). Because padding always trails, every output at a valid
position is exactly what the example alone would give.
"""

from __future__ import annotations

import torch
from torch import nn


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence in [B, T, F] along time within its length; padding stays put.
    The operation is its own inverse."""
    positions = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    last = lengths.unsqueeze(1) - 1
    index = torch.where(positions <= last, last - positions, positions)
    return x.gather(1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def at_last_position(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """[B, T, F] -> [B, F]: each example's vector at position length - 1."""
    index = (lengths - 1).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
    return x.gather(1, index).squeeze(1)


class BidirectionalLSTM(nn.Module):
    """Two unidirectional LSTMs; outputs [B, T, 2H] (forward | backward) and each direction's
    final hidden and cell state, read at the example's own last step."""

    def __init__(self, input_size: int, hidden_size: int):
        super().__init__()
        self.forward_lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        forward_out, _ = self.forward_lstm(x)
        backward_reversed, _ = self.backward_lstm(reverse_within_length(x, lengths))
        outputs = torch.cat([forward_out, reverse_within_length(backward_reversed, lengths)], dim=-1)
        # nn.LSTM's returned state is the one after the padded end; the state after each
        # example's own last token is its output there (h), which is what a decoder needs.
        final = torch.cat([at_last_position(forward_out, lengths), at_last_position(backward_reversed, lengths)], -1)
        return outputs, final
