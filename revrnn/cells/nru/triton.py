"""Triton glue of the NRU: its runner (kernels :mod:`revrnn.kernels.nru`)."""
from __future__ import annotations

import torch
from torch import Tensor

from ...backends.triton.runner import chunk_mask, common, kernels
from ...kernels import nru  # noqa: F401 (an attribute of kernels; torch.compile cannot trace an import)
from ..base import CellSpec
from .chunk import NRUChunks
from .spec import L5_EPS


def runners(backend):
    runner = NRURunner()
    return lambda cell: runner


class NRURunner(NRUChunks):
    """The NRU step as two GEMMs in torch and two kernels forward, three GEMMs (one recomputes
    the heads) and three kernels backward (see :mod:`revrnn.kernels.nru`).

    Unlike the other cells', the GEMMs run in the state dtype, float32 for float16/bfloat16
    input, as the reference step computes: the memory is unbounded. The gradient of the
    projected input is in its dtype. Residuals as :class:`.chunk.NRUChunks`; the kernels
    recompute the write and erase vectors from the recomputed heads.
    """

    def refusal(self, cell: CellSpec) -> str | None:
        if kernels.nru.supported(cell.memory_size, cell.num_heads):
            return None
        return (f"memory_size={cell.memory_size} with num_heads={cell.num_heads} gives a row tile "
                f"larger than Triton's largest tensor ({kernels.nru.MAX_TILE} elements)")

    @staticmethod
    def heads(u: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor) -> None:
        """``out = u weightᵀ + bias``: the step's heads from ``u = [h_t; m_{t-1}]``."""
        if bias is None:
            torch.mm(u, weight.t(), out=out)
        else:
            torch.addmm(bias, u, weight.t(), out=out)

    def forward(self, cell, p, extras, chunk, state, keep):
        xp = chunk.xp.contiguous()
        K, B, H = xp.shape
        sdtype = cell.state_dtype(xp.dtype)
        L = H + cell.memory_size
        w_hh, w_heads, b_heads = self.weights(cell, p, sdtype)
        mask = chunk_mask(chunk)
        s = self.states(cell, state, K + 1 if keep else 2, lambda shape: common.new(shape, sdtype, xp.device))
        y = common.new((K, B, H), sdtype, xp.device)
        rec = common.new((B, H), sdtype, xp.device)
        heads = common.new((B, cell.head_rows), sdtype, xp.device)
        for i in range(K):
            r, w = (i, i + 1) if keep else (i % 2, (i + 1) % 2)
            mi = None if mask is None else mask[i]
            torch.mm(s[r], w_hh.t(), out=rec)
            kernels.nru.nru_hidden_step(xp[i], rec, s[r], mi, s[w], y[i])  # s[w] = [h_t; m_{t-1}]
            self.heads(s[w], w_heads, b_heads, heads)
            kernels.nru.nru_memory_step(heads, s[r], mi, s[w], cell.num_heads, cell.use_relu, cell.memory_clamp,
                                        L5_EPS)
        return y, self.split(s[K if keep else K % 2], H), ((s,) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        (s,) = residuals
        K, B, L = s.shape[0] - 1, s.shape[1], s.shape[2]
        H, sdtype, dev = L - cell.memory_size, s.dtype, s.device
        w_hh, w_heads, b_heads = self.weights(cell, p, sdtype)
        mask = chunk_mask(chunk)
        g = torch.cat([gs.to(sdtype) for gs in grad_state], 1)  # [dh; dm], updated in place
        dy = grad_out.to(sdtype).contiguous()
        dxp = common.new((K, B, H), sdtype, dev)
        dheads = common.new((K, B, cell.head_rows), sdtype, dev)
        dprod = common.new((B, 2 * cell.num_heads * cell.memory_size), sdtype, dev)
        u = torch.empty(B, L, dtype=sdtype, device=dev)
        heads = torch.empty(B, cell.head_rows, dtype=sdtype, device=dev)
        for i in range(K - 1, -1, -1):
            mi = None if mask is None else mask[i]
            torch.cat((s[i + 1, :, :H], s[i, :, H:]), 1, out=u)
            self.heads(u, w_heads, b_heads, heads)
            kernels.nru.nru_memory_backward(heads, s[i], mi, g, dheads[i], dprod, cell.num_heads, cell.use_relu,
                                            cell.memory_clamp, L5_EPS)
            kernels.nru.nru_outer_backward(heads, dprod, mi, dheads[i], cell.num_heads)
            g.addmm_(dheads[i], w_heads)  # the heads' part of the gradients of h_t and m_{t-1}
            kernels.nru.nru_hidden_backward(g, dy[i], s[i + 1], mi, dxp[i])
            g.addmm_(dxp[i], w_hh)
        grads = self.grads(cell, p, s, dxp, dheads)
        return dxp.to(chunk.xp.dtype), self.split(g, H), grads
