"""``revrnn.nn.LiGRU``: the light GRU with batch-normalised input projections."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.light import LiGRUCell, check_recurrent_dropout
from .base import RecurrentBase


class LiGRU(RecurrentBase):
    r"""Multi-layer light GRU (Ravanelli et al. 2018), torch.nn-style.

    ``[a_h, a_z] = BN(W x)``, ``z = σ(a_z + U_z h)``, ``n = ReLU(a_h + U_h h) ⊙ m``,
    ``h' = z ⊙ h + (1 − z) ⊙ n`` — no reset gate, one (2H, H) recurrent GEMM per step.

    Args:
        input_size, hidden_size, num_layers, batch_first, dropout, bidirectional, device,
            dtype: as in :class:`torch.nn.GRU`.
        bias: with ``batch_norm`` the BN shift β (the projection itself has no bias); without,
            a bias of the input projection. There is no recurrent bias.
        batch_norm: batch-normalise the input projections (BN over all valid T·B rows in
            training, which updates the running statistics with momentum 0.05; running
            statistics in eval). Batch norm is never applied to ``U h``.
        recurrent_dropout: probability ``p`` in [0, 1) of dropping a unit of the candidate,
            one mask per sequence and unit kept for the whole sequence; inverted (kept units
            scaled by 1/(1 − p) in training, identity in eval). See
            :class:`revrnn.cells.ligru.LiGRUCell` for this choice and the parameter layout.
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.

    Deviation from pytorch-kaldi: with ``bidirectional=True`` each direction has its own
    weights and batch norm (torch.nn's convention); pytorch-kaldi runs the reversed copy with
    the same weights and one BN over both directions.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 batch_norm: bool = True, recurrent_dropout: float = 0.0, device: Any = None,
                 dtype: torch.dtype | None = None, *, backend: str = "auto", memory: str = "store",
                 checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        self.batch_norm = batch_norm
        self.recurrent_dropout = check_recurrent_dropout(recurrent_dropout)
        super().__init__(lambda n: LiGRUCell(n, hidden_size, bias, batch_norm, recurrent_dropout),
                         input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots,
                         device=device, dtype=dtype)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        if not self.batch_norm:
            s += ", batch_norm=False"
        return s + (f", recurrent_dropout={self.recurrent_dropout}" if self.recurrent_dropout else "")
