"""Triton glue of the g-LSTM: the LSTM runner with the time gate (dense: every unit computed,
closed ones passed through by the kernel), and the sparse path that computes open units only.

Loading it adds the sparse path's settings to the Triton backend (:mod:`.sparse`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...backends.triton.runner import ChunkBuffers, chunk_mask, common, grad_buffers, kernels
from ..base import CellSpec, Params
from ..lstm.triton import LSTMRunner
from .sparse import add_settings, open_units, use_sparse
from .spec import time_gate_grads

if TYPE_CHECKING:
    from ...backends.triton import TritonBackend


def runners(backend: "TritonBackend"):
    add_settings(backend)
    runner = SparseGLSTMRunner(backend)
    return lambda cell: runner


class GLSTMRunner(LSTMRunner):
    """The dense g-LSTM: the LSTM kernels with the time gate."""

    def time_gate(self, cell, p, chunk, sdtype):
        t = torch.arange(chunk.t0, chunk.t0 + chunk.xp.shape[0], device=chunk.xp.device)
        return cell.time_gate(p, t).to(sdtype).contiguous()

    def time_gate_grads(self, cell, p, chunk, k, dk):
        return time_gate_grads(p, chunk.t0, k, dk)


class SparseGLSTMRunner(GLSTMRunner):
    """The g-LSTM computing only open units: the time gate depends only on t, μ and σ, so
    each step's open units are known before it runs. Per step the open units' rows of
    ``W_hh`` and columns of the projected input are gathered, the GEMM and the LSTM kernel run
    on them alone, and their results are scattered into the state; a step with no open unit
    costs nothing but the output copy. One host synchronisation per chunk reads the counts.

    Residuals store nothing for closed units: the end state, and per step the open units'
    indices, previous states and activations. Backward restores each previous state from the
    end state by writing those back, walking the chunk in reverse.
    """

    @staticmethod
    def gate_rows(idx: Tensor, H: int) -> Tensor:
        """Rows (and projection columns) of the four gates of units ``idx``."""
        return (torch.arange(4, device=idx.device)[:, None] * H + idx).reshape(-1)

    def forward(self, cell, p, extras, chunk, state, keep):
        run = ChunkBuffers(chunk, state, keep=False)
        K, B, G = run.xp.shape
        H = G // 4
        k = self.time_gate(cell, p, chunk, run.sdtype)
        if not use_sparse(self.backend, k):
            return super().forward(cell, p, extras, chunk, state, keep)
        h, c = (s[0].clone() for s in run.states)
        counts, idx = open_units(k)
        work = self.backend.sparse_work
        work.open += sum(counts)
        work.total += K * H
        y = run.new(K, B, H, dtype=run.dtype)
        olds, acts, off = [], [], 0
        for i, n in enumerate(counts):
            if n:
                units = idx[off:off + n]
                rows = self.gate_rows(units, H)
                off += n
                h_o, c_o = h[:, units], c[:, units]
                rec = h.to(run.dtype) @ p["weight_hh"][rows].t()
                act = run.new(B, 4 * n, dtype=run.dtype) if keep else None
                h_n, c_n, y_o = run.new(B, n), run.new(B, n), run.new(B, n, dtype=run.dtype)
                kernels.lstm.lstm_forward_step(run.xp[i][:, rows].contiguous(), rec, h_o, c_o, run.mask_at(i),
                                               k[i, units].contiguous(), [], h_n, c_n, y_o, act)
                h[:, units], c[:, units] = h_n, c_n
                if keep:
                    olds.append(torch.stack((h_o, c_o)))
                    acts.append(act)
            y[i] = h if run.mask is None else h * run.mask[i, :, None]
        end = (h.to(run.dtype), c.to(run.dtype))
        if not keep:
            return y, end, None
        olds = torch.cat(olds, 2) if olds else h.new_empty(2, B, 0)
        acts = torch.cat(acts, 1) if acts else run.xp.new_empty(B, 0)
        return y, end, (h, c, idx, torch.tensor(counts), olds, acts)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        if len(residuals) == 3:  # kept by the dense path
            return super().backward(cell, p, extras, chunk, residuals, grad_out, grad_state)
        h_end, c_end, idx, counts, olds, acts = residuals
        K, B, H = grad_out.shape
        dtype, sdtype = grad_out.dtype, h_end.dtype
        w = p["weight_hh"]
        k = self.time_gate(cell, p, chunk, sdtype)
        mask = chunk_mask(chunk)
        h, c = h_end.clone(), c_end.clone()
        dh, dc = grad_buffers(grad_state, sdtype)
        gxp = torch.zeros(K, B, 4 * H, dtype=dtype, device=grad_out.device)
        dw = torch.zeros_like(w) if w.requires_grad else None
        dk = torch.zeros(K, H, dtype=sdtype, device=grad_out.device)
        counts = counts.tolist()
        off, aoff = idx.shape[0], acts.shape[1]
        for i in range(K - 1, -1, -1):
            # every unit's output is its new state on valid rows; open units get theirs below
            dh += grad_out[i] if mask is None else grad_out[i] * mask[i, :, None]
            n = counts[i]
            if not n:
                continue
            off, aoff = off - n, aoff - 4 * n
            units = idx[off:off + n]
            rows = self.gate_rows(units, H)
            h_o, c_o = olds[0, :, off:off + n].contiguous(), olds[1, :, off:off + n].contiguous()
            h[:, units], c[:, units] = h_o, c_o  # the state before step i
            dh_o, dc_o = dh[:, units].contiguous(), dc[:, units].contiguous()
            dgates, dk_o = common.new((B, 4 * n), sdtype, h.device), torch.empty_like(dh_o)
            kernels.lstm.lstm_backward_step(acts[:, aoff:aoff + 4 * n].contiguous(), h_o, c_o,
                                            None if mask is None else mask[i], k[i, units].contiguous(), [],
                                            torch.zeros_like(dh_o), dh_o, dc_o, dgates, dk_o, None, None)
            dh[:, units], dc[:, units] = dh_o, dc_o
            w_o = w[rows].to(dtype)
            dh += dgates.to(dtype) @ w_o
            gxp[i][:, rows] = dgates.to(dtype)
            dk[i, units] = dk_o.sum(0)
            if dw is not None:
                dw.index_add_(0, rows, (dgates.t().to(dtype) @ h.to(dtype)).to(w.dtype))
        grads = {"weight_hh": dw, **self.time_gate_grads(cell, p, chunk, k, dk)}
        return gxp, (dh.to(dtype), dc.to(dtype)), grads
