"""``revrnn.nn.LSTM``: a drop-in replacement for torch.nn.LSTM."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.lstm import LSTMCell
from .base import RecurrentBase


class LSTM(RecurrentBase):
    r"""Multi-layer LSTM with torch.nn.LSTM's constructor, parameters, ``state_dict`` and outputs.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        proj_size, device, dtype: as in :class:`torch.nn.LSTM`.
        backend: ``"auto"``, ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.
        memory: ``"store"`` (full BPTT) or ``"recompute"`` (keep the state every
            ``checkpoint_every`` steps, √T by default, and recompute in backward).
        checkpoint_slots: with ``"recompute"``, keep at most this many states per layer and
            direction and re-run steps on the binomial (revolve) schedule instead; see
            :class:`revrnn.nn.base.RecurrentBase` and :mod:`revrnn.schedule`.

    ``forward(input, (h_0, c_0)=None)`` returns ``output, (h_n, c_n)`` exactly like torch.nn.LSTM,
    including PackedSequence and unbatched input.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 proj_size: int = 0, device: Any = None, dtype: torch.dtype | None = None, *,
                 backend: str = "auto", memory: str = "store", checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        if not isinstance(proj_size, int) or proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable projections")
        if isinstance(hidden_size, int) and 0 < hidden_size <= proj_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        self.proj_size = proj_size
        super().__init__(lambda n: LSTMCell(n, hidden_size, bias, proj_size), input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, bidirectional, backend=backend,
                         memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots, device=device, dtype=dtype)

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (f", proj_size={self.proj_size}" if self.proj_size else "")
