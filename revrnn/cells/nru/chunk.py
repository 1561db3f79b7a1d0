"""What the NRU's runners share (Triton :mod:`.triton`, the compiled executor :mod:`.cpu`): the
step's weights in the state dtype, the residuals' layout, and the chunk's weight gradients, one
GEMM each over the chunk from what backward keeps."""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ...backends.base import Runner, bias_sums, weight_grad
from ..base import Params, State
from .spec import NRUCell


class NRUChunks(Runner):
    """Residuals of a chunk of K steps: the states ``[h; m]`` before and after every step, one
    (K + 1, B, H + M) tensor in the state dtype, and nothing else; backward recomputes each
    step's heads from ``[h_t; m_{t-1}]``. States, outputs and their gradients are in the state
    dtype (the GEMMs run in it too: the memory is unbounded)."""

    @staticmethod
    def weights(cell: NRUCell, p: Params, sdtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
        """``weight_hh``, ``weight_heads`` and ``bias_heads`` (None without bias) in the state dtype."""
        bias = p["bias_heads"].to(sdtype) if cell.bias else None
        return p["weight_hh"].to(sdtype), p["weight_heads"].to(sdtype), bias

    @staticmethod
    def states(cell: NRUCell, state: State, rows: int, new: Callable[..., Tensor]) -> Tensor:
        """``rows`` state rows ``[h; m]`` from ``new(shape)``, the first holding ``state``."""
        h, m = state
        s = new((rows, h.shape[0], cell.hidden_size + cell.memory_size))
        s[0, :, :cell.hidden_size], s[0, :, cell.hidden_size:] = h, m
        return s

    @staticmethod
    def split(row: Tensor, H: int) -> State:
        """``(h, m)`` of a (B, H + M) row as fresh tensors, never views of the residuals."""
        return tuple(part.clone(memory_format=torch.contiguous_format) for part in (row[:, :H], row[:, H:]))

    @staticmethod
    def grads(cell: NRUCell, p: Params, s: Tensor, dxp: Tensor, dheads: Tensor) -> dict[str, Tensor | None]:
        """The parameter gradients of the chunk from its kept states ``s`` (K + 1, B, H + M), the
        gradients of the projection ``dxp`` (K, B, H) and of the heads ``dheads`` (K, B, 2k + 4r)."""
        K, H, sdtype = s.shape[0] - 1, cell.hidden_size, s.dtype
        grads: dict[str, Tensor | None] = {"weight_hh": None, "weight_heads": None}
        if p["weight_hh"].requires_grad:
            grads["weight_hh"] = weight_grad(dxp, s[:K], sdtype).to(p["weight_hh"].dtype)
        if p["weight_heads"].requires_grad:  # the operands [h_t; m_{t-1}] as two column blocks
            dw = (weight_grad(dheads, s[1:, :, :H], sdtype), weight_grad(dheads, s[:K, :, H:], sdtype))
            grads["weight_heads"] = torch.cat(dw, 1).to(p["weight_heads"].dtype)
        grads.update(bias_sums(cell, p, dheads, {"bias_heads": slice(None)}))
        return grads
