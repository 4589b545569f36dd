"""Music model: a character-level LSTM language model over ABC text.

Beside each character the LSTM reads the bar clock (`seqserve.bar_clock`): how much of the
current bar is left after that character, computed from the text itself. Counting note
lengths is then arithmetic done outside the network, and the LSTM only has to learn what to
write when a bar is (nearly) full.

The same module is exported twice: as a prompt graph that reads T characters in one run,
and as a step graph (T = 1) that generation calls once per character, carrying (h, c), so a
character costs the same however long the output already is.
"""

from __future__ import annotations

import torch
from torch import nn

from seqserve import bar_clock


class CharLSTM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, clock_dim: int = 32):
        super().__init__()
        self.num_layers, self.hidden_size = num_layers, hidden_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.clock_embedding = nn.Embedding(bar_clock.SIZE, clock_dim)
        self.lstm = nn.LSTM(embed_dim + clock_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def initial_state(self, batch: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        zeros = torch.zeros(self.num_layers, batch, self.hidden_size, device=device)
        return zeros, zeros.clone()

    def forward(self, tokens: torch.Tensor, clocks: torch.Tensor, h0: torch.Tensor, c0: torch.Tensor):
        """tokens and clocks [B, T] int64, h0 and c0 [layers, B, H] -> logits [B, T, V], hT, cT."""
        inputs = torch.cat([self.embedding(tokens), self.clock_embedding(clocks)], dim=-1)
        outputs, (hT, cT) = self.lstm(inputs, (h0, c0))
        return self.head(self.dropout(outputs)), hT, cT


class CharLSTMStep(nn.Module):
    """The exported step graph: token and clock [B, 1], state -> logits [B, V], new state."""

    def __init__(self, model: CharLSTM):
        super().__init__()
        self.model = model

    def forward(self, token: torch.Tensor, clock: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        logits, h, c = self.model(token, clock, h, c)
        return logits[:, 0, :], h, c
