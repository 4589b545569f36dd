"""Sentiment classifier: embedding -> bidirectional LSTM -> length-aware pooling -> linear.

The bidirectional layer is two unidirectional LSTMs; the backward one reads each example
reversed within its own length (padding stays at the end), which exports to ONNX as plain
LSTM nodes, unlike `pack_padded_sequence`. Because padding always trails, every output at a
valid position is exactly what the example alone would give, so the readout (mean and max
over valid positions only) does not depend on what else is in the batch.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from training.recurrent import reverse_within_length


class SentimentLSTM(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, hidden_size: int, pad_id: int = 0,
                 embedding_dropout: float = 0.25, dropout: float = 0.5, num_classes: int = 2,
                 attention_pooling: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.embedding_dropout = nn.Dropout(embedding_dropout)
        self.forward_lstm = nn.LSTM(embed_dim, hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(embed_dim, hidden_size, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        # Optionally a third readout: attention over the valid positions (a learned score per
        # position, softmax, weighted sum), which can pick out the few words that decide.
        self.attention = nn.Linear(2 * hidden_size, 1) if attention_pooling else None
        self.classifier = nn.Linear((6 if attention_pooling else 4) * hidden_size, num_classes)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """input_ids [B, T] (int64, right-padded), lengths [B] (int64, >= 1) -> logits [B, 2]."""
        x = self.embedding_dropout(self.embedding(input_ids))
        forward_states, _ = self.forward_lstm(x)
        backward_reversed, _ = self.backward_lstm(reverse_within_length(x, lengths))
        backward_states = reverse_within_length(backward_reversed, lengths)
        states = torch.cat([forward_states, backward_states], dim=-1)  # [B, T, 2H]

        valid = (torch.arange(states.shape[1], device=states.device).unsqueeze(0)
                 < lengths.unsqueeze(1)).unsqueeze(-1)  # [B, T, 1]
        mean = (states * valid).sum(dim=1) / lengths.unsqueeze(1).to(states.dtype)
        peak = states.masked_fill(~valid, float("-inf")).amax(dim=1)
        readouts = [mean, peak]
        if self.attention is not None:
            weights = torch.softmax(self.attention(states).masked_fill(~valid, float("-inf")), dim=1)  # [B, T, 1]
            readouts.append((weights * states).sum(dim=1))
        return self.classifier(self.dropout(torch.cat(readouts, dim=-1)))


class ReviewLanguageModel(nn.Module):
    """The classifier's embedding and both LSTMs, trained first as language models on the
    training reviews (Dai & Le 2015; ULMFiT): the forward LSTM predicts each next word, the
    backward LSTM each previous word. What they learn about how reviews are written carries
    over to the classifier, which starts from these weights. The output layers are adaptive
    softmaxes (frequent words cheap, rare ones in smaller clusters) and are dropped afterwards."""

    def __init__(self, classifier: SentimentLSTM, cutoffs: list[int], dropout: float):
        super().__init__()
        self.classifier = classifier
        hidden, vocab = classifier.forward_lstm.hidden_size, classifier.embedding.num_embeddings
        self.dropout = nn.Dropout(dropout)
        self.next_word = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab, cutoffs, div_value=4.0)
        self.previous_word = nn.AdaptiveLogSoftmaxWithLoss(hidden, vocab, cutoffs, div_value=4.0)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Summed negative log-likelihood of every predicted word in both directions, and how
        many words were predicted (2 x (length - 1) per example): padding predicts nothing."""
        model = self.classifier
        x = model.embedding_dropout(model.embedding(input_ids))
        forward_states, _ = model.forward_lstm(x)
        backward_states, _ = model.backward_lstm(reverse_within_length(x, lengths))
        reversed_ids = reverse_within_length(input_ids.unsqueeze(-1), lengths).squeeze(-1)
        # The state after word t predicts word t + 1 of its reading order.
        predicts = (torch.arange(input_ids.shape[1] - 1, device=input_ids.device).unsqueeze(0) + 1
                    < lengths.unsqueeze(1))  # [B, T-1]
        total = input_ids.new_zeros((), dtype=torch.float32)
        for states, ids, head in ((forward_states, input_ids, self.next_word),
                                  (backward_states, reversed_ids, self.previous_word)):
            output = head(self.dropout(states[:, :-1][predicts]), ids[:, 1:][predicts])
            total = total - output.output.sum()
        return total, 2 * int(predicts.sum())


class SentimentEnsemble(nn.Module):
    """Classifiers trained apart (same tokenizer), answering together as one graph: its
    `logits` are the log of the members' mean probabilities, so their softmax is that mean.
    Members that err differently cancel part of each other's mistakes."""

    def __init__(self, members: list[SentimentLSTM]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, input_ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        log_probabilities = torch.stack([torch.log_softmax(m(input_ids, lengths), dim=-1) for m in self.members])
        return torch.logsumexp(log_probabilities, dim=0) - math.log(len(self.members))
