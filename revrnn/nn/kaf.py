"""``revrnn.nn.KAFLSTM`` and ``revrnn.nn.KAFGRU``: LSTM and GRU with KAF gates."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.kaf import KAFGRUCell, KAFLSTMCell
from .base import RecurrentBase

_ARGS = """
    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as in :class:`torch.nn.{base}`.
        kaf_size: D, number of dictionary elements per gate neuron (default 20).
        kaf_range: B, the dictionary is ``linspace(−B, B, D)`` (default 3.0).
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.
"""


class _KAFModule(RecurrentBase):
    cell: type

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 kaf_size: int = 20, kaf_range: float = 3.0, device: Any = None,
                 dtype: torch.dtype | None = None, *, backend: str = "auto", memory: str = "store",
                 checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        self.kaf_size, self.kaf_range = kaf_size, kaf_range
        super().__init__(lambda n: self.cell(n, hidden_size, bias, kaf_size=kaf_size, kaf_range=kaf_range),
                         input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots,
                         device=device, dtype=dtype)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", kaf_size={self.kaf_size}, kaf_range={self.kaf_range}"


class KAFLSTM(_KAFModule):
    __doc__ = r"""Multi-layer LSTM whose i, f, o gates are ``σ(½ s + ½ KAF(s))`` (Scardapane et al. 2018).

    The KAF, its dictionary, γ and the kernel-ridge-regression init (``KAF(s) ≈ s`` so that the
    gates start as σ) are documented in :mod:`revrnn.cells.kaf`. Parameters per layer and
    direction: torch.nn.LSTM's plus ``kaf_alpha_l{k}`` (3H, D; rows i, f, o) and the buffer
    ``kaf_dict_l{k}`` (D). ``forward`` is torch.nn.LSTM's.
    """ + _ARGS.format(base="LSTM")
    cell = KAFLSTMCell


class KAFGRU(_KAFModule):
    __doc__ = r"""Multi-layer GRU (reset-after, torch.nn.GRU) whose r, z gates are ``σ(½ s + ½ KAF(s))``.

    See :mod:`revrnn.cells.kaf`. Parameters per layer and direction: torch.nn.GRU's plus
    ``kaf_alpha_l{k}`` (2H, D; rows r, z) and the buffer ``kaf_dict_l{k}`` (D). ``forward`` is
    torch.nn.GRU's.
    """ + _ARGS.format(base="GRU")
    cell = KAFGRUCell
