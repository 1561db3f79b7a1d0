"""``revrnn.nn.NRU``: the Non-saturating Recurrent Unit (official-code variant)."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.nru import NRUCell
from .base import RecurrentBase


class NRU(RecurrentBase):
    r"""Multi-layer NRU (Chandar et al. 2019) with the equations of the official code.

    Equations, parameter names and shapes, init and numerics are documented in
    :mod:`revrnn.cells.nru`. Per layer and direction the parameters are ``weight_ih_l{k}``
    (H, I), ``weight_hh_l{k}`` (H, H+M), ``bias_ih_l{k}`` (H), ``weight_heads_l{k}``
    (2k+4r, H+M) and ``bias_heads_l{k}`` (2k+4r) with ``r = sqrt(num_heads · memory_size)``.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as in :class:`torch.nn.GRU`.
        memory_size: M, size of the flat memory (official ``memory_size``, default 64).
        num_heads: k, number of write and of erase heads (official ``k``, default 4);
            ``sqrt(k·M)`` must be an integer.
        use_relu: ReLU on α, β and the write/erase vectors (official default False; True
            only in the char-PTB config).
        memory_clamp: optional bound ``c``: each memory slot is clamped to ``[-c, c]`` after
            every step. Not in the official code; off by default.
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.

    ``forward(input, (h_0, m_0)=None)`` returns ``output, (h_n, m_n)``; ``m`` has shape
    (num_layers·num_directions, B, memory_size). With float16/bfloat16 parameters the state
    and the output are float32.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 memory_size: int = 64, num_heads: int = 4, use_relu: bool = False,
                 memory_clamp: float | None = None, device: Any = None,
                 dtype: torch.dtype | None = None, *, backend: str = "auto", memory: str = "store",
                 checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        self.memory_size, self.num_heads = memory_size, num_heads
        self.use_relu, self.memory_clamp = use_relu, memory_clamp
        super().__init__(lambda n: NRUCell(n, hidden_size, bias, memory_size, num_heads, use_relu,
                                           memory_clamp),
                         input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots,
                         device=device, dtype=dtype)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", memory_size={self.memory_size}, num_heads={self.num_heads}"
        if self.use_relu:
            s += ", use_relu=True"
        return s + (f", memory_clamp={self.memory_clamp}" if self.memory_clamp is not None else "")
