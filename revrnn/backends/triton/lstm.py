"""Runners of the LSTM family: torch.nn.LSTM and the g-LSTM, dense or sparse."""
from __future__ import annotations

from typing import TYPE_CHECKING

from dataclasses import dataclass

import torch
from torch import Tensor

from ...cells.base import CellSpec, Params
from ...cells.glstm import SIGMA_MIN, GLSTMCell
from ..base import Chunk
from .runner import Runner, Steps, chunk_mask, common, grad_buffers, kaf_grads, kaf_operands, kernels, weight_grad

if TYPE_CHECKING:
    from . import TritonBackend


class LSTMRunner(Runner):
    """torch.nn.LSTM (with or without projection), the KAF-gated LSTM and, with the time gate,
    the g-LSTM (dense: every unit is computed and closed units are passed through by the kernel).

    Residuals: the activations (K, B, 4H) in the input dtype (the i, f, o pre-activations instead
    of the gates with KAF gates) and the float states h (K + 1, B, P) and c (K + 1, B, H).
    Projecting, the kernel yields ``o ⊙ tanh(c)`` and a GEMM per step projects it; backward gets
    that output back from its kernel and computes ``W_hr``'s gradient as one GEMM per chunk.
    """

    def __init__(self, backend: "TritonBackend") -> None:
        self.backend = backend

    @staticmethod
    def time_gate(cell: CellSpec, p: Params, chunk: Chunk, sdtype: torch.dtype) -> Tensor | None:
        """The g-LSTM's gates of the chunk's steps (K, H); None for the plain LSTM."""
        if not isinstance(cell, GLSTMCell):
            return None
        t = torch.arange(chunk.t0, chunk.t0 + chunk.xp.shape[0], device=chunk.xp.device)
        return cell.time_gate(p, t).to(sdtype).contiguous()

    @staticmethod
    def project(hc: Tensor, w_hr: Tensor, h_prev: Tensor, h_out: Tensor, y: Tensor, mask: Tensor | None) -> None:
        """``h = o ⊙ tanh(c) W_hrᵀ`` into the output ``y`` and, on valid rows, the state ``h_out``
        (masked rows keep ``h_prev`` and output 0)."""
        torch.mm(hc.to(y.dtype), w_hr.t(), out=y)
        if mask is None:
            h_out.copy_(y)
        else:
            valid = mask[:, None].bool()
            torch.where(valid, y.to(h_out.dtype), h_prev, out=h_out)
            y.masked_fill_(~valid, 0)

    def forward(self, cell, p, extras, chunk, state, keep):
        if self.backend.use_persistent(cell, chunk.xp):
            y, h, c, res = kernels.persistent.lstm_forward(chunk.xp, p["weight_hh"], *state, chunk.mask, keep)
            return y, (h.to(y.dtype), c.to(y.dtype)), res
        run = Steps(chunk, state, keep)
        K, B, G = run.xp.shape
        hs, cs = run.states
        w_t, w_hr = p["weight_hh"].t(), p.get("weight_hr")
        k = self.time_gate(cell, p, chunk, run.sdtype)
        kaf = kaf_operands(cell, p, run.sdtype)
        act = run.new(K, B, G, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, hs.shape[-1], dtype=run.dtype), run.new(B, G, dtype=run.dtype)
        hc = None if w_hr is None else run.new(B, G // 4)
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype), w_t, out=rec)
            kernels.lstm.lstm_forward_step(run.xp[i], rec, None if hc is not None else hs[r], cs[r], run.mask_at(i),
                                           None if k is None else k[i], kaf, hs[w] if hc is None else hc, cs[w],
                                           y[i] if hc is None else None, None if act is None else act[i])
            if hc is not None:
                self.project(hc, w_hr, hs[r], hs[w], y[i], run.mask_at(i))
        return y, run.end(), ((act, hs, cs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        act, hs, cs = residuals
        K, B, G = act.shape
        H, dtype, sdtype = G // 4, act.dtype, hs.dtype
        w, w_hr = p["weight_hh"], p.get("weight_hr")
        if self.backend.use_persistent(cell, act):  # the same residual layout as the step kernels'
            gxp, dh, dc, dw = kernels.persistent.lstm_backward(residuals, w, grad_out, *grad_state, chunk.mask,
                                                               w.requires_grad)
            return gxp, (dh.to(dtype), dc.to(dtype)), {"weight_hh": dw}
        k = self.time_gate(cell, p, chunk, sdtype)
        kaf = kaf_operands(cell, p, sdtype)
        mask = chunk_mask(chunk)
        dh, dc = grad_buffers(grad_state, sdtype)
        dgates = common.new((K, B, G), sdtype, act.device)
        dk = None if k is None else torch.empty_like(hs[1:])
        dkaf = common.new((K, B, 3 * H), sdtype, act.device) if kaf else None
        if w_hr is not None:  # per step: the gradient of the projection's output, and its input
            dproj, hcs, dhc = (common.new(shape, sdtype, act.device) for shape in ((K, *dh.shape), (K, B, H), (B, H)))
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            m = None if mask is None else mask[i]
            if w_hr is None:
                kernels.lstm.lstm_backward_step(act[i], hs[i], cs[i], m, None if k is None else k[i], kaf, dy[i],
                                                dh, dc, dgates[i], None if dk is None else dk[i],
                                                None if dkaf is None else dkaf[i], None)
            else:
                # valid rows send the gradient of their new h through the projection; masked
                # rows pass it to the previous h
                torch.add(dh, dy[i] if m is None else dy[i] * m[:, None], out=dproj[i])
                if m is None:
                    dh.zero_()
                else:
                    valid = m[:, None].bool()
                    dh.copy_(dproj[i].masked_fill(valid, 0))
                    dproj[i].masked_fill_(~valid, 0)
                dhc.copy_(dproj[i].to(dtype) @ w_hr.to(dtype))
                kernels.lstm.lstm_backward_step(act[i], None, cs[i], m, None, kaf, None, dhc, dc, dgates[i], None,
                                                None if dkaf is None else dkaf[i], hcs[i])
            dh += dgates[i].to(dtype) @ w.to(dtype)  # the recurrent part of dh_{t-1}
        grads: dict[str, Tensor | None] = {"weight_hh": weight_grad(dgates, hs[:K], dtype) if w.requires_grad else None}
        if w_hr is not None:
            grads["weight_hr"] = weight_grad(dproj, hcs, dtype) if w_hr.requires_grad else None
        if k is not None:
            grads.update(time_gate_grads(cell, p, chunk, k, dk.sum(1)))
        if kaf:
            grads.update(kaf_grads(p, kaf, act, dkaf, H, skip=2 * H))
        return dgates.to(dtype), (dh.to(dtype), dc.to(dtype)), grads


@dataclass
class SparseWork:
    """Unit-steps of the g-LSTM evaluated by the sparse path's forward passes (recomputation
    included) against the dense count: ``1 − open/total`` of the pointwise work, of the
    recurrent GEMM and of the kept activations is skipped."""

    open: int = 0
    total: int = 0

    @property
    def skipped_fraction(self) -> float:
        return 1.0 - self.open / self.total if self.total else 0.0


class SparseGLSTMRunner(LSTMRunner):
    """The g-LSTM computing only open units: the time gate depends only on t, μ and σ, so
    each step's open units are known before it runs. Per step the open units' rows of
    ``W_hh`` and columns of the projected input are gathered, the GEMM and the LSTM kernel run
    on them alone, and their results are scattered into the state; a step with no open unit
    costs nothing but the output copy. One host synchronisation per chunk reads the counts.

    Residuals store nothing for closed units: the end state, and per step the open units'
    indices, previous states and activations. Backward restores each previous state from the
    end state by writing those back, walking the chunk in reverse.
    """

    #: ``auto`` runs a chunk sparse when at most this fraction of its unit-steps is open
    max_open = 0.5

    def sparse(self, k: Tensor) -> bool:
        mode = self.backend.glstm_sparse
        return mode == "always" or (mode == "auto" and (k > 0).double().mean().item() <= self.max_open)

    @staticmethod
    def open_units(k: Tensor) -> tuple[list[int], Tensor]:
        """Per step the number of open units, and their indices concatenated."""
        nz = (k > 0).nonzero()
        return torch.bincount(nz[:, 0], minlength=k.shape[0]).tolist(), nz[:, 1]

    @staticmethod
    def gate_rows(idx: Tensor, H: int) -> Tensor:
        """Rows (and projection columns) of the four gates of units ``idx``."""
        return (torch.arange(4, device=idx.device)[:, None] * H + idx).reshape(-1)

    def forward(self, cell, p, extras, chunk, state, keep):
        run = Steps(chunk, state, keep=False)
        K, B, G = run.xp.shape
        H = G // 4
        k = self.time_gate(cell, p, chunk, run.sdtype)
        if not self.sparse(k):
            return super().forward(cell, p, extras, chunk, state, keep)
        h, c = (s[0].clone() for s in run.states)
        counts, idx = self.open_units(k)
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
        grads = {"weight_hh": dw, **time_gate_grads(cell, p, chunk, k, dk)}
        return gxp, (dh.to(dtype), dc.to(dtype)), grads


def time_gate_grads(cell: GLSTMCell, p: Params, chunk: Chunk, k: Tensor, dk: Tensor) -> dict[str, Tensor]:
    """Gradients of ``mu`` and ``sigma`` from those of the chunk's time gates ``k`` (K, H):
    ``∂k/∂μ = k (t − μ)/v`` and ``∂k/∂σ = k (t − μ)² σ / v²`` with ``v = max(σ², SIGMA_MIN²)``
    (zero where the clamp holds, and where the gate is closed since k = 0 there)."""
    mu, sigma = p["mu"], p["sigma"]
    t = torch.arange(chunk.t0, chunk.t0 + k.shape[0], device=k.device, dtype=k.dtype)[:, None]
    s = sigma.to(k.dtype)
    var = s.square()
    v = var.clamp_min(SIGMA_MIN ** 2)
    d = t - mu.to(k.dtype)
    g = dk * k
    dsigma = (g * d.square() / v.square()).sum(0) * s * (var >= SIGMA_MIN ** 2)
    return {"mu": (g * d / v).sum(0).to(mu.dtype), "sigma": dsigma.to(sigma.dtype)}
