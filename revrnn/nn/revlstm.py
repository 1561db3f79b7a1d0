"""``revrnn.nn.RevLSTM``: the exactly reversible LSTM of MacKay et al. (2018)."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.reversible.revlstm import RevLSTMCell
from .reversible import ReversibleBase


class RevLSTM(ReversibleBase):
    r"""Multi-layer reversible LSTM with the paper's h-forget gate.

    Each layer's (h, c) is split into halves; a half-update is
    ``c = f ⊙ c + i ⊙ g``, ``h = p ⊙ h + o ⊙ tanh(c)`` with the c-forget gate f and the h-forget
    gate p restricted to [2**-k, 1] (equations in :mod:`revrnn.cells.reversible.revlstm`). Both c and h
    go through exact multiplies, four per step per unit pair, sharing one buffer.

    Arguments as :class:`revrnn.nn.RevGRU`; ``forget_bits=0`` gives the no-forgetting RevLSTM
    (f = p = 1). ``forward(input, (h_0, c_0)=None)`` returns ``output, (h_n, c_n)`` like
    torch.nn.LSTM. States are int64 fixed point, so |c| and |h| may grow far beyond the
    authors' int32 range of 256 without wrapping; initial states must satisfy |value| < 2**32.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 forget_bits: int = 3, device: Any = None,
                 dtype: torch.dtype | None = None, *, memory: str = "reversible", verify: bool = True,
                 chunk_size: int | None = None, backend: str = "auto") -> None:
        super().__init__(RevLSTMCell, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, forget_bits, device, dtype, memory=memory, verify=verify, chunk_size=chunk_size,
                         backend=backend)
