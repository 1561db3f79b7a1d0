"""``revrnn.nn.MGU``: the minimal gated unit and Heck & Salem's MGU1/2/3."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.gru import check_variant
from ..cells.mgu import MGUCell
from .base import RecurrentBase


class MGU(RecurrentBase):
    r"""Multi-layer minimal gated unit (Zhou et al. 2016), torch.nn-style.

    ``f = σ(W_f x + U_f h + b_f)``, ``n = tanh(W_h x + U_h (f ⊙ h) + b_h)``,
    ``h' = (1 − f) ⊙ h + f ⊙ n`` (the paper's orientation: ``f`` is the update gate and also
    resets ``h`` before ``U_h``). With ``variant=0`` it has 2/3 of torch.nn.GRU's parameters.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as in :class:`torch.nn.GRU`.
        variant: Heck & Salem's gate variants (2017, arXiv 1701.03452). ``0`` full MGU;
            ``1`` ``f = σ(U_f h + b_f)`` (no input term); ``2`` ``f = σ(U_f h)`` (no input
            term, no bias); ``3`` ``f = σ(b_f)`` (bias only: a constant per-unit leak).
            Parameter shapes are documented in :class:`revrnn.cells.mgu.MGUCell`.
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.

    ``forward(input, h_0=None)`` returns ``output, h_n`` like torch.nn.GRU.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 variant: int = 0, device: Any = None, dtype: torch.dtype | None = None, *,
                 backend: str = "auto", memory: str = "store", checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        self.variant = check_variant(variant)
        super().__init__(lambda n: MGUCell(n, hidden_size, bias, variant), input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, backend=backend,
                         memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", variant={self.variant}" if self.variant else "")
