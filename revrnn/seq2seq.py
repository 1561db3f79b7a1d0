"""A reversible encoder with attention over a stored slice (MacKay et al. 2018, §3.3).

A reversible encoder needs no activations for its own backward, but attention reads every
encoder step. MacKay et al. keep only a slice of each hidden state, ``slice_dim`` of its units,
explicitly; attention reads that slice, and the rest of the outputs is dropped as soon as the
slice is copied out (the reversible backward reconstructs what it needs). Memory per source step
is then the slice plus the buffer's bits, instead of every activation of a stored encoder.

:class:`Seq2Seq`: token embeddings, the encoder (any module; reversible by default), a GRU decoder
started from the encoder's final top state, and dot-product attention (Luong's "general" score)
from each decoder step over the slice; teacher-forced, one call for the whole target.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class Seq2Seq(nn.Module):
    """``forward(src, tgt_in) -> logits``: ``src`` (S, B) and ``tgt_in`` (T, B) token ids (the
    targets shifted right behind a start token), logits (T, B, tokens).

    Args:
        encoder: a recurrent module mapping (S, B, hidden) to (S, B, hidden) outputs and its
            final state (e.g. ``revrnn.nn.RevGRU(hidden, hidden)``).
        tokens: the vocabulary (source and target; one more id is the start token).
        hidden: the embedding, encoder output and decoder width.
        slice_dim: the encoder units attention reads (the first ``slice_dim``); the whole
            output when None.
    """

    def __init__(self, encoder: nn.Module, tokens: int, hidden: int, slice_dim: int | None = None) -> None:
        super().__init__()
        if slice_dim is not None and not (isinstance(slice_dim, int) and 1 <= slice_dim <= hidden):
            raise ValueError(f"slice_dim must be an int in [1, {hidden}] or None, got {slice_dim!r}")
        self.tokens, self.hidden, self.slice_dim = tokens, hidden, slice_dim or hidden
        self.src_embed = nn.Embedding(tokens, hidden)
        self.tgt_embed = nn.Embedding(tokens + 1, hidden)  # + the start token
        self.encoder = encoder
        self.decoder = nn.GRU(hidden, hidden)
        self.query = nn.Linear(hidden, self.slice_dim, bias=False)
        self.out = nn.Linear(hidden + self.slice_dim, tokens)

    @property
    def start(self) -> int:
        return self.tokens

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """(keys (S, B, slice_dim), the encoder's final top hidden state (B, hidden)). The keys
        are a copy, so the encoder's full output is freed when this returns."""
        out, state = self.encoder(self.src_embed(src))
        keys = out[..., :self.slice_dim].clone()  # a view would keep every unit of every step alive
        return keys, out[-1].clone()

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        keys, last = self.encode(src)
        dec, _ = self.decoder(self.tgt_embed(tgt_in), last[None].contiguous())
        scores = torch.einsum("tbd,sbd->bts", self.query(dec), keys)
        context = torch.einsum("bts,sbd->tbd", scores.softmax(dim=-1), keys)
        return self.out(torch.cat([dec, context], dim=-1))

    def shifted(self, tgt: Tensor) -> Tensor:
        """The decoder's teacher-forced input: the start token, then ``tgt`` without its last step."""
        return torch.cat([torch.full_like(tgt[:1], self.start), tgt[:-1]])
