"""Runners of the GRU family: the reset-after GRU (torch.nn.GRU and variants GRU1–3) and the
reset-before GRU and MGU."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...cells.base import CellSpec, Params
from ...cells.gru import GRUCell
from .runner import (Runner, Steps, bias_sums, chunk_mask, common, grad_buffers, kaf_grads, kaf_operands, kernels,
                     weight_grad)

if TYPE_CHECKING:
    from . import TritonBackend


def gate_bias(cell: CellSpec, p: Params) -> Tensor | None:
    """The bias vector added to the gates inside the step, if any: ``bias_gates`` (variants 1
    and 3), or the r, z rows of the reset-after GRU's ``bias_hh``."""
    if "bias_gates" in p:
        return p["bias_gates"]
    if isinstance(cell, GRUCell) and cell.reset_after and cell.bias and "x" in cell.terms:
        return p["bias_hh"][:2 * cell.hidden_size]
    return None


class GRURunner(Runner):
    """torch.nn.GRU (reset-after), its gate variants GRU1–3 and the KAF-GRU: one GEMM per step.

    Residuals: ``[r, z, n, ĥn]`` (K, B, 4H) in the input dtype and the float states, or those
    of :func:`revrnn.kernels.persistent.gru_forward` (three tensors) when it ran the chunk.
    """

    def __init__(self, backend: "TritonBackend") -> None:
        self.backend = backend

    def forward(self, cell, p, extras, chunk, state, keep):
        if self.backend.use_persistent(cell, chunk.xp):
            y, h, res = kernels.persistent.gru_forward(chunk.xp, p["weight_hh"], p.get("bias_hh"), *state, chunk.mask, keep)
            return y, (h.to(y.dtype),), res
        run = Steps(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        (hs,) = run.states
        w_t = p["weight_hh"].t()
        gb, bhn = gate_bias(cell, p), p["bias_hh"][-H:] if cell.bias else None
        kaf = kaf_operands(cell, p, run.sdtype)
        act = run.new(K, B, 4 * H, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, H, dtype=run.dtype), run.new(B, w_t.shape[1], dtype=run.dtype)
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype), w_t, out=rec)
            kernels.gru.gru_forward_step(run.xp[i], rec, gb, bhn, hs[r], run.mask_at(i), kaf, hs[w], y[i],
                                 None if act is None else act[i])
        return y, run.end(), ((act, hs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        if len(residuals) == 3:
            w, b = p["weight_hh"], p.get("bias_hh")
            gxp, dh, dw, db = kernels.persistent.gru_backward(residuals, w, b, grad_out, *grad_state, chunk.mask,
                                                      w.requires_grad, b is not None and b.requires_grad)
            return gxp, (dh.to(gxp.dtype),), {"weight_hh": dw, **({"bias_hh": db} if b is not None else {})}
        act, hs = residuals
        K, B, H = act.shape[0], act.shape[1], cell.hidden_size
        dtype, sdtype = act.dtype, hs.dtype
        w = p["weight_hh"]
        rec = slice(0, 3 * H) if w.shape[0] == 3 * H else slice(2 * H, 3 * H)  # dpre columns of the GEMM
        mask = chunk_mask(chunk)
        (dh,) = grad_buffers(grad_state, sdtype)
        dpre = common.new((K, B, 4 * H), sdtype, act.device)
        kaf = kaf_operands(cell, p, sdtype)
        dkaf = common.new((K, B, 2 * H), sdtype, act.device) if kaf else None
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            kernels.gru.gru_backward_step(act[i], hs[i], None if mask is None else mask[i], kaf, dy[i], dh, dpre[i],
                                          None if dkaf is None else dkaf[i])
            dh += dpre[i, :, rec].to(dtype) @ w.to(dtype)
        grads = {"weight_hh": weight_grad(dpre[..., rec], hs[:K], dtype) if w.requires_grad else None}
        grads.update(bias_sums(cell, p, dpre, {"bias_gates": slice(0, 2 * H),
                                               "bias_hh": slice(0, 3 * H) if "x" in cell.terms else slice(2 * H, 3 * H)}))
        if kaf:
            grads.update(kaf_grads(p, kaf, act, dkaf, H, skip=2 * H))
        gxp = torch.cat((dpre[..., :2 * H], dpre[..., 3 * H:]), -1) if "x" in cell.terms else dpre[..., 3 * H:]
        return gxp.to(dtype), (dh.to(dtype),), grads


class ResetBeforeRunner(Runner):
    """Reset-before gated units: the GRU with ``reset_after=False`` (NG = 2 gates) and the MGU
    (NG = 1), every gate variant; two dependent GEMMs per step.

    Residuals: ``[gates, n]`` (K, B, (NG + 1)H) in the input dtype and the float states.
    """

    @staticmethod
    def layout(cell: CellSpec, p: Params) -> tuple[int, Tensor | None, Tensor]:
        """(NG, the gates' recurrent weight or None, the candidate's recurrent weight W_n)."""
        ng = 2 if isinstance(cell, GRUCell) else 1
        w = p["weight_hh"]
        H = cell.hidden_size
        return ng, (w[:ng * H] if "h" in cell.terms else None), w[-H:]

    def forward(self, cell, p, extras, chunk, state, keep):
        run = Steps(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        ng, w_g, w_n = self.layout(cell, p)
        (hs,) = run.states
        gb = gate_bias(cell, p)
        act = run.new(K, B, (ng + 1) * H, dtype=run.dtype) if keep else None
        y, rh, rec2 = (run.new(*shape, dtype=run.dtype) for shape in ((K, B, H), (B, H), (B, H)))
        rec1 = None if w_g is None else run.new(B, ng * H, dtype=run.dtype)
        for i in range(K):
            r, w = run.rows(i)
            a = None if act is None else act[i]
            if rec1 is not None:
                torch.mm(hs[r].to(run.dtype), w_g.t(), out=rec1)
            kernels.gru.reset_gates_step(run.xp[i], rec1, gb, hs[r], rh, a, ng)
            torch.mm(rh, w_n.t(), out=rec2)
            kernels.gru.reset_update_step(run.xp[i], rec1, gb, rec2, hs[r], run.mask_at(i), hs[w], y[i], a, ng)
        return y, run.end(), ((act, hs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        act, hs = residuals
        K, B, G = act.shape
        H, dtype, sdtype = cell.hidden_size, act.dtype, hs.dtype
        ng, w_g, w_n = self.layout(cell, p)
        mask = chunk_mask(chunk)
        (dh,) = grad_buffers(grad_state, sdtype)
        dpre = common.new((K, B, G), sdtype, act.device)
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            m = None if mask is None else mask[i]
            kernels.gru.reset_update_backward(act[i], hs[i], m, dy[i], dh, dpre[i], ng)
            drh = dpre[i, :, ng * H:].to(dtype) @ w_n.to(dtype)
            kernels.gru.reset_gates_backward(act[i], hs[i], m, drh, dh, dpre[i], ng)
            if w_g is not None:
                dh += dpre[i, :, :ng * H].to(dtype) @ w_g.to(dtype)
        grads: dict[str, Tensor | None] = {"weight_hh": None}
        if p["weight_hh"].requires_grad:
            rh = act[..., :H].to(sdtype) * hs[:K]  # the candidate GEMM's operand ρ ⊙ h
            dw_n = weight_grad(dpre[..., ng * H:], rh, dtype)
            grads["weight_hh"] = dw_n if w_g is None else torch.cat((weight_grad(dpre[..., :ng * H], hs[:K], dtype), dw_n))
        grads.update(bias_sums(cell, p, dpre, {"bias_gates": slice(0, ng * H)}))
        gxp = dpre if "x" in cell.terms else dpre[..., ng * H:]
        return gxp.to(dtype), (dh.to(dtype),), grads
