"""Triton glue of the light cells: one runner for LiGRU and LiBRU (kernels ``revrnn.kernels.light``)."""
from __future__ import annotations

import torch

from ...backends.base import Runner
from ...backends.base import weight_grad
from ...backends.triton.runner import ChunkBuffers, chunk_mask, common, grad_buffers, kernels
from ...kernels import light  # noqa: F401 (an attribute of kernels; torch.compile cannot trace an import)
from ..base import CellSpec
from .libru import log_eps, safe_log
from .ligru import LiGRUCell


def runners(backend):
    runner = LightRunner()
    return lambda cell: runner


class LightRunner(Runner):
    """LiGRU and LiBRU (both forms): one GEMM per step on the feedback ``g(h)``.

    Residuals: the kept activations (K, B, 2H) in the input dtype and the float states.
    """

    @staticmethod
    def form(cell: CellSpec) -> int:
        """The kernels' form number (:mod:`revrnn.kernels.light`)."""
        if isinstance(cell, LiGRUCell):
            return kernels.light.LIGRU
        return kernels.light.PROBS if cell.form == "probs" else kernels.light.LOGPROBS

    def forward(self, cell, p, extras, chunk, state, keep):
        run = ChunkBuffers(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        form = self.form(cell)
        eps = log_eps(run.dtype)
        (hs,) = run.states
        w_t = p["weight_hh"].t()
        drop = extras.get("drop_mask")
        act = run.new(K, B, 2 * H, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, H, dtype=run.dtype), run.new(B, 2 * H, dtype=run.dtype)
        # form 1's GEMM operand log(max(h, 0) + ε); each step's kernel writes the next one's
        fb = safe_log(hs[0].to(run.dtype)) if form == kernels.light.PROBS else None
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype) if fb is None else fb, w_t, out=rec)
            kernels.light.light_forward_step(run.xp[i], rec, hs[r], run.mask_at(i), drop, hs[w], y[i],
                                     None if act is None else act[i], fb, form, eps)
        return y, run.end(), ((act, hs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        act, hs = residuals
        K, B, G = act.shape
        dtype, sdtype = act.dtype, hs.dtype
        form = self.form(cell)
        eps = log_eps(dtype)
        w = p["weight_hh"]
        drop = extras.get("drop_mask")
        mask = chunk_mask(chunk)
        (dh,) = grad_buffers(grad_state, sdtype)
        dpre = common.new((K, B, G), sdtype, act.device)
        dy = grad_out.contiguous()
        dfb = None  # form 1: the gradient of the feedback log(max(h, 0) + ε) of the later step
        for i in range(K - 1, -1, -1):
            kernels.light.light_backward_step(act[i], hs[i], hs[i + 1], None if mask is None else mask[i], drop, dy[i], dh,
                                      dfb, dpre[i], form, eps)
            grad_in = dpre[i].to(dtype) @ w.to(dtype)
            if form == kernels.light.PROBS:
                dfb = grad_in
            else:
                dh += grad_in
        operand = hs[:K]
        if form == kernels.light.PROBS:
            dh += dfb * (hs[0] >= 0) / (hs[0].clamp_min(0) + eps)
            operand = safe_log(hs[:K].to(dtype))
        grads = {"weight_hh": weight_grad(dpre, operand, dtype) if w.requires_grad else None}
        return dpre.to(dtype), (dh.to(dtype),), grads
