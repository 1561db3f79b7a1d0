"""Triton glue of the GRU family: the reset-after GRU (torch.nn.GRU and variants GRU1–3, and
through its gate hooks the KAF-GRU) and the reset-before gated units (the GRU with
``reset_after=False``, and the MGU family)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...backends.base import Runner
from ...backends.base import bias_sums, weight_grad
from ...backends.triton.runner import ChunkBuffers, SigmoidGates, chunk_mask, common, grad_buffers, kernels
from ...kernels import gru, persistent  # noqa: F401 (attributes of kernels; torch.compile cannot trace an import)
from ..base import CellSpec, Params
from .spec import GRUCell

if TYPE_CHECKING:
    from ...backends.triton import TritonBackend


def runners(backend: "TritonBackend"):
    after, before = GRURunner(backend), ResetBeforeRunner()
    return lambda cell: after if cell.reset_after else before


class GRURunner(SigmoidGates, Runner):
    """torch.nn.GRU (reset-after) and its gate variants GRU1–3: one GEMM per step.

    Residuals: ``[r, z, n, ĥn]`` (K, B, 4H) in the input dtype and the float states, or those
    of :func:`revrnn.kernels.persistent.gru_forward` (three tensors) when it ran the chunk.
    """

    def __init__(self, backend: "TritonBackend") -> None:
        self.backend = backend

    def persistent(self, cell: CellSpec, like: Tensor) -> bool:
        """Whether :mod:`revrnn.kernels.persistent` runs the chunk: torch.nn's GRU (variant 0),
        H ≤ 128, when the backend's setting asks for it."""
        return (type(cell) is GRUCell and cell.variant == 0 and like.dtype in kernels.persistent.DTYPES
                and kernels.persistent.supported(cell.hidden_size) and self.backend.wants_persistent(like))

    def forward(self, cell, p, extras, chunk, state, keep):
        if self.persistent(cell, chunk.xp):
            y, h, res = kernels.persistent.gru_forward(chunk.xp, p["weight_hh"], p.get("bias_hh"), *state, chunk.mask, keep)
            return y, (h.to(y.dtype),), res
        run = ChunkBuffers(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        (hs,) = run.states
        w_t = p["weight_hh"].t()
        gb, bhn = cell.gate_bias(p), p["bias_hh"][-H:] if cell.bias else None
        gate_fn = self.gate_operands(cell, p, run.sdtype)
        act = run.new(K, B, 4 * H, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, H, dtype=run.dtype), run.new(B, w_t.shape[1], dtype=run.dtype)
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype), w_t, out=rec)
            kernels.gru.gru_forward_step(run.xp[i], rec, gb, bhn, hs[r], run.mask_at(i), gate_fn, hs[w], y[i],
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
        gate_fn = self.gate_operands(cell, p, sdtype)
        dgate_fn = common.new((K, B, 2 * H), sdtype, act.device) if gate_fn else None
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            kernels.gru.gru_backward_step(act[i], hs[i], None if mask is None else mask[i], gate_fn, dy[i], dh, dpre[i],
                                          None if dgate_fn is None else dgate_fn[i])
            dh += dpre[i, :, rec].to(dtype) @ w.to(dtype)
        grads = {"weight_hh": weight_grad(dpre[..., rec], hs[:K], dtype) if w.requires_grad else None}
        grads.update(bias_sums(cell, p, dpre, {"bias_gates": slice(0, 2 * H),
                                               "bias_hh": slice(0, 3 * H) if "x" in cell.terms else slice(2 * H, 3 * H)}))
        if gate_fn:
            grads.update(self.gate_grads(p, gate_fn, act, dgate_fn, H, skip=2 * H))
        gxp = torch.cat((dpre[..., :2 * H], dpre[..., 3 * H:]), -1) if "x" in cell.terms else dpre[..., 3 * H:]
        return gxp.to(dtype), (dh.to(dtype),), grads


class ResetBeforeRunner(Runner):
    """Reset-before gated units, every gate variant: the GRU with ``reset_after=False`` (NG = 2
    gates) and the MGU (NG = 1); two dependent GEMMs per step.

    Residuals: ``[gates, n]`` (K, B, (NG + 1)H) in the input dtype and the float states.
    """

    @staticmethod
    def layout(cell: CellSpec, p: Params) -> tuple[int, Tensor | None, Tensor]:
        """(NG, the gates' recurrent weight or None, the candidate's recurrent weight W_n)."""
        ng = cell.num_gates
        w = p["weight_hh"]
        H = cell.hidden_size
        return ng, (w[:ng * H] if "h" in cell.terms else None), w[-H:]

    def forward(self, cell, p, extras, chunk, state, keep):
        run = ChunkBuffers(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        ng, w_g, w_n = self.layout(cell, p)
        (hs,) = run.states
        gb = cell.gate_bias(p)
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
