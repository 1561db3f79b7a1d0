"""``revrnn.nn.GRU``: a drop-in replacement for torch.nn.GRU, plus reset-before and GRU1/2/3."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.gru import GRUCell, check_variant
from .base import RecurrentBase


class GRU(RecurrentBase):
    r"""Multi-layer GRU with torch.nn.GRU's constructor, parameters, ``state_dict`` and outputs.

    With the defaults (``reset_after=True, variant=0``) this is exactly torch.nn.GRU:
    ``n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))``, ``h' = z ⊙ h + (1 − z) ⊙ n``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as in :class:`torch.nn.GRU`.
        reset_after: ``False`` applies the reset gate before the recurrent matrix,
            ``n = tanh(W_in x + U_n (r ⊙ h) + b)`` (Cho et al. 2014 v3; Dey & Salem 2017).
            It needs two dependent GEMMs per step instead of one.
        variant: Dey & Salem's gate variants (2017, arXiv 1701.05923). ``0`` full GRU;
            ``1`` gates ``σ(U h + b)`` (no input term); ``2`` gates ``σ(U h)`` (no input term
            and no bias); ``3`` gates ``σ(b)`` (bias only, per-unit constants). Parameter
            shapes of the variants are documented in :class:`revrnn.cells.gru.GRUCell`.
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *, reset_after: bool = True,
                 variant: int = 0, backend: str = "auto", memory: str = "store",
                 checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        check_variant(variant)
        self.reset_after, self.variant = reset_after, variant
        super().__init__(lambda n: GRUCell(n, hidden_size, bias, reset_after, variant), input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots,
                         device=device, dtype=dtype)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if not self.reset_after:
            s += ", reset_after=False"
        return s + (f", variant={self.variant}" if self.variant else "")
