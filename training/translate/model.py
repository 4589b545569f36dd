"""English -> Spanish: a bidirectional LSTM encoder and an LSTM decoder with Luong attention.

    encoder:  source ids -> embedding -> BiLSTM (x encoder_layers, each reading the one
              below) -> memory [B, S, 2He]
              the top layer's final states of both directions -> decoder's initial (h, c)
    decoder:  previous token -> embedding -> LSTM -> h_t
              score(h_t, m_s) = h_t . W m_s  ("general" attention; W m_s is precomputed once
              per sentence as `keys`), padded source positions masked out
              context = sum_s a_ts m_s;  out_t = tanh(W_c [context; h_t])
              logits = out_t . E^T (the output layer shares the embedding)

No input feeding: the decoder LSTM then runs over a whole target sentence in one call at
training time, which is what makes a CPU epoch affordable. One vocabulary serves both
languages, and one embedding matrix serves the encoder, the decoder and the output layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from seqserve.translation import SubwordCodec
from training.recurrent import BidirectionalLSTM


class Translator(nn.Module):
    def __init__(self, vocab_size: int, embed_dim: int, encoder_hidden: int, decoder_hidden: int,
                 dropout: float = 0.3, pad_id: int = 0, encoder_layers: int = 1):
        super().__init__()
        memory_dim = 2 * encoder_hidden
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        nn.init.normal_(self.embedding.weight, std=embed_dim ** -0.5)
        self.dropout = nn.Dropout(dropout)
        self.encoder = BidirectionalLSTM(embed_dim, encoder_hidden)
        # Layers above the first are named apart, so one-layer checkpoints (translate/1) load as they are.
        self.upper_encoders = nn.ModuleList(BidirectionalLSTM(memory_dim, encoder_hidden)
                                            for _ in range(encoder_layers - 1))
        self.initial_h = nn.Linear(memory_dim, decoder_hidden)
        self.initial_c = nn.Linear(memory_dim, decoder_hidden)
        self.decoder = nn.LSTM(embed_dim, decoder_hidden, batch_first=True)
        self.attention_keys = nn.Linear(memory_dim, decoder_hidden, bias=False)
        self.combine = nn.Linear(memory_dim + decoder_hidden, embed_dim)
        self.output_bias = nn.Parameter(torch.zeros(vocab_size))

    def encode(self, source_ids: torch.Tensor, source_lengths: torch.Tensor):
        """-> memory [B, S, 2He], keys [B, S, Hd], h0 [B, Hd], c0 [B, Hd]."""
        memory, final = self.encoder(self.dropout(self.embedding(source_ids)), source_lengths)
        for layer in self.upper_encoders:
            memory, final = layer(self.dropout(memory), source_lengths)
        memory = self.dropout(memory)
        return memory, self.attention_keys(memory), torch.tanh(self.initial_h(final)), self.initial_c(final)

    def attend(self, states: torch.Tensor, memory: torch.Tensor, keys: torch.Tensor, source_mask: torch.Tensor):
        """states [B, T, Hd] -> log-probabilities [B, T, V] and attention [B, T, S]."""
        scores = torch.bmm(states, keys.transpose(1, 2))  # [B, T, S]
        scores = scores.masked_fill(~source_mask.unsqueeze(1), float("-inf"))
        attention = torch.softmax(scores, dim=-1)
        context = torch.bmm(attention, memory)  # [B, T, 2He]
        out = self.dropout(torch.tanh(self.combine(torch.cat([context, states], dim=-1))))
        logits = out @ self.embedding.weight.t() + self.output_bias
        return torch.log_softmax(logits, dim=-1), attention

    def forward(self, source_ids, source_lengths, target_in):
        """Teacher forcing: target_in [B, T] (BOS + reference) -> log-probabilities [B, T, V]."""
        memory, keys, h0, c0 = self.encode(source_ids, source_lengths)
        states, _ = self.decoder(self.dropout(self.embedding(target_in)), (h0.unsqueeze(0), c0.unsqueeze(0)))
        log_probs, _ = self.attend(states, memory, keys, source_mask(source_ids, source_lengths))
        return log_probs

    def step(self, previous_token, h, c, memory, keys, mask):
        """One decoder step: previous_token [B] -> log-probabilities [B, V], h, c [B, Hd],
        attention [B, S]."""
        x = self.embedding(previous_token).unsqueeze(1)
        states, (h_new, c_new) = self.decoder(x, (h.unsqueeze(0), c.unsqueeze(0)))
        log_probs, attention = self.attend(states, memory, keys, mask)
        return log_probs.squeeze(1), h_new.squeeze(0), c_new.squeeze(0), attention.squeeze(1)


def source_mask(source_ids: torch.Tensor, source_lengths: torch.Tensor) -> torch.Tensor:
    """[B, S] bool: True at each example's real tokens."""
    positions = torch.arange(source_ids.shape[1], device=source_ids.device).unsqueeze(0)
    return positions < source_lengths.unsqueeze(1)


class TranslatorEnsemble(nn.Module):
    """Translators trained apart (one tokenizer) decoding together: the next token's
    distribution is the mean of the members' (the log of it is returned, like one member's
    log_softmax). The members' memories, keys and states sit side by side on the feature axis,
    so the ensemble's graphs take and return what one translator's do, only wider; the
    attention returned (for the heatmap) is the members' mean."""

    def __init__(self, members: list[Translator]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.memory_sizes = [m.attention_keys.in_features for m in members]
        self.state_sizes = [m.attention_keys.out_features for m in members]

    def encode(self, source_ids: torch.Tensor, source_lengths: torch.Tensor):
        outputs = [m.encode(source_ids, source_lengths) for m in self.members]
        return tuple(torch.cat(parts, dim=-1) for parts in zip(*outputs))

    def step(self, previous_token, h, c, memory, keys, mask):
        # Contiguous slices: the exported LSTM loop wants each state laid out as one member's.
        hs = [x.contiguous() for x in h.split(self.state_sizes, dim=-1)]
        cs = [x.contiguous() for x in c.split(self.state_sizes, dim=-1)]
        memories, keyss = memory.split(self.memory_sizes, dim=-1), keys.split(self.state_sizes, dim=-1)
        outputs = [m.step(previous_token, *inputs, mask)
                   for m, inputs in zip(self.members, zip(hs, cs, memories, keyss))]
        log_probs, h_next, c_next, attention = zip(*outputs)
        mean_log_probs = torch.logsumexp(torch.stack(log_probs), dim=0) - math.log(len(self.members))
        return mean_log_probs, torch.cat(h_next, dim=-1), torch.cat(c_next, dim=-1), torch.stack(attention).mean(dim=0)


class TranslatorEncoder(nn.Module):
    """The exported encoder graph: (source_ids, source_lengths) -> memory, keys, h0, c0."""

    def __init__(self, model: Translator):
        super().__init__()
        self.model = model

    def forward(self, source_ids, source_lengths):
        return self.model.encode(source_ids, source_lengths)


class TranslatorStep(nn.Module):
    """The exported decoder-step graph."""

    def __init__(self, model: Translator):
        super().__init__()
        self.model = model

    def forward(self, previous_token, h, c, memory, keys, source_mask):
        return self.model.step(previous_token, h, c, memory, keys, source_mask)


@torch.no_grad()
def greedy_translate(model: Translator, codec: SubwordCodec, sources: list[list[int]], device: torch.device,
                     max_length: int = 100, batch_size: int = 256) -> list[list[int]]:
    """Greedy decoding with the torch model (validation during training; export checks the
    ONNX graphs' decoding against it)."""
    model.eval()
    outputs: list[list[int]] = [[] for _ in sources]
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        ids, lengths = (torch.from_numpy(x).to(device) for x in codec.pad([sources[i] for i in batch]))
        memory, keys, h, c = model.encode(ids, lengths)
        mask = source_mask(ids, lengths)
        previous = torch.full((len(batch),), codec.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)
        produced = []
        for _ in range(max_length):
            log_probs, h, c, _ = model.step(previous, h, c, memory, keys, mask)
            previous = log_probs.argmax(dim=-1)
            produced.append(previous)
            done |= previous == codec.eos_id
            if done.all():
                break
        for row, ids_out in zip(batch, torch.stack(produced, dim=1).tolist()):
            outputs[row] = ids_out[: ids_out.index(codec.eos_id)] if codec.eos_id in ids_out else ids_out
    return outputs
