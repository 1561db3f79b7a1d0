"""The module side shared by RevGRU and RevLSTM: torch.nn-style input handling from
:class:`RecurrentBase`, with the whole stack run by one reversible Function (t-major, one
information buffer for every layer) instead of one engine call per layer.

Backends are resolved like every module's (:func:`revrnn.backends.resolve`): ``"reference"``
runs each half-update as torch ops around the integer core; ``"triton"`` runs the GEMMs in torch
and everything else of a half-update (activations, quantisation, buffer, exact multiply, and in
reverse the divide with the pointwise gradients) in one fused kernel of
:mod:`revrnn.kernels.reversible` (:mod:`revrnn.cells.reversible.triton`). Triton's σ and tanh
differ from torch's at rounding level, so the two backends agree closely, not bit for bit; each
reverses its own forward exactly. ``"auto"`` picks Triton on CUDA tensors when it is available.
"""
from __future__ import annotations

import warnings

from typing import Any, Callable

import torch
from torch import Tensor

from ..backends import resolve
from ..cells.reversible.base import RevCellSpec, check_forget_bits
from ..cells.reversible.buffer import MAX_CHUNK_OPS
from ..cells.reversible.function import BufferStats, Reversible, RevPlan, check_chunk, multiplies_per_step, run_store
from .base import RecurrentBase

#: default steps per chunk (capped so a chunk stays within 1024 multiplies per buffer element)
DEFAULT_CHUNK = 64


class ReversibleBase(RecurrentBase):
    """A stack of reversible layers; see :class:`revrnn.nn.RevGRU` for the arguments."""

    memory_modes = ("reversible", "store")

    def __init__(self, make_cell: Callable[..., RevCellSpec], input_size: int, hidden_size: int,
                 num_layers: int = 1, bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, forget_bits: int = 3, device: Any = None,
                 dtype: torch.dtype | None = None, *,
                 memory: str = "reversible", verify: bool = True, chunk_size: int | None = None,
                 backend: str = "auto") -> None:
        check_forget_bits(forget_bits)
        if bidirectional is not False:
            raise ValueError(f"bidirectional={bidirectional!r}: reversible modules run one direction only")
        if not isinstance(verify, bool):
            raise TypeError(f"verify should be of type bool, got: {type(verify).__name__}")
        super().__init__(lambda n: make_cell(n, hidden_size, forget_bits, bias), input_size, hidden_size,
                         num_layers, bias, batch_first, dropout, False, backend=backend, memory=memory,
                         device=device, dtype=dtype)
        self.forget_bits, self.verify = forget_bits, verify
        self.chunk_size = chunk_size
        per_step = max(1, multiplies_per_step(self.cells))
        self._chunk = chunk_size if chunk_size is not None else max(1, min(DEFAULT_CHUNK, MAX_CHUNK_OPS // per_step))
        check_chunk(self._chunk, self.cells)
        #: buffer accounting of the last forward (None before the first)
        self.last_stats: BufferStats | None = None
        self._warned_autocast = False

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", forget_bits={self.forget_bits}"
        if not self.verify:
            s += ", verify=False"
        return s + (f", chunk_size={self.chunk_size}" if self.chunk_size is not None else "")

    def _stack(self, x: Tensor, states: tuple[Tensor, ...], mask: Tensor | None,
               lengths: Tensor | None, t0: int = 0) -> tuple[Tensor, tuple[Tensor, ...]]:
        # t0 unused: the reversible cells' steps do not depend on the step index
        backend = resolve(self.backend, self.cells[0], x.device, x.dtype)
        if x.dtype not in (torch.float32, torch.float64):
            raise TypeError(f"{type(self).__name__} supports float32 and float64, got {x.dtype}; "
                            "convert the module with .float() or .double()")
        if torch.is_autocast_enabled(x.device.type) and not getattr(self, "_warned_autocast", False):
            # the forward and the reverse must compute the same gates bit for bit: no autocast inside
            self._warned_autocast = True
            warnings.warn(f"{type(self).__name__} runs in {x.dtype} under autocast "
                          f"({torch.get_autocast_dtype(x.device.type)}): its exact reversal needs the same "
                          "gate arithmetic forward and backward, so autocast is off inside it", stacklevel=3)
        drop = [None]
        for _ in range(1, self.num_layers):
            if self.training and self.dropout > 0:
                # locked: one mask per sequence, reused by the reverse pass
                keep = torch.full((x.shape[1], self.hidden_size), 1 - self.dropout, dtype=x.dtype, device=x.device)
                drop.append(torch.bernoulli(keep) / (1 - self.dropout) if self.dropout < 1 else keep)
            else:
                drop.append(None)
        plan = RevPlan(cells=self.cells, names=[list(n) for n in self._names], mask=mask, drop=drop,
                       chunk=self._chunk, verify=self.verify, halves=[backend.runner_for(c) for c in self.cells])
        flat = [self.cell_params(i)[name] for i, names in enumerate(plan.names) for name in names]
        if self.memory == "reversible":
            out, *finals = Reversible.apply(plan, x, *states, *flat)
        else:
            out, *finals = run_store(plan, x, states, flat)
        self.last_stats = plan.stats
        return out, tuple(finals)
