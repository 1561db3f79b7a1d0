"""``revrnn.nn.RNN``: a drop-in replacement for torch.nn.RNN (Elman, tanh or ReLU)."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.elman import ElmanCell, check_nonlinearity
from .base import RecurrentBase


class RNN(RecurrentBase):
    r"""Multi-layer Elman RNN with torch.nn.RNN's constructor, parameters, ``state_dict`` and
    outputs: ``h' = φ(W_ih x + b_ih + W_hh h + b_hh)``, φ = tanh or ReLU.

    Args:
        input_size, hidden_size, num_layers, nonlinearity, bias, batch_first, dropout,
        bidirectional, device, dtype: as in :class:`torch.nn.RNN`.
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.

    ``forward(input, h_0=None)`` returns ``output, h_n`` like torch.nn.RNN.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, nonlinearity: str = "tanh",
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *, backend: str = "auto",
                 memory: str = "store", checkpoint_every: int | None = None, checkpoint_slots: int | None = None):
        self.nonlinearity = check_nonlinearity(nonlinearity)
        super().__init__(lambda n: ElmanCell(n, hidden_size, bias, nonlinearity), input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, backend=backend, memory=memory,
                         checkpoint_every=checkpoint_every, checkpoint_slots=checkpoint_slots,
                         device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + (f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity != "tanh" else "")
