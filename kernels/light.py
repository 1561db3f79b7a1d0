"""Step kernels of the light cells: LiGRU and the two LiBRU forms. All three take
``[a_1, a_z] = xp + g(h) Uᵀ`` (the backend's GEMM, ``g`` the feedback) and keep ``h' = z h +
(1 − z) c̃`` in some form (``FORM``):

* 0, LiGRU: ``g(h) = h``, ``c̃ = ReLU(a_1) ⊙ m`` (``m`` the recurrent-dropout mask); kept ``[c̃, z]``;
* 1, LiBRU ``probs``: ``g(h) = log(max(h, 0) + ε)``, ``c̃ = σ(a_1)``; kept ``[c̃, z]``;
* 2, LiBRU ``logprobs``: ``g(h) = h``, ``h' = logaddexp(h − softplus(−a_z), softplus(a_1) − softplus(a_z))``;
  kept ``[a_1, a_z]``.

For form 1 the forward writes the next step's GEMM operand ``g(h')`` too, and the backward
takes the GEMM's ``d g`` of the later step and applies ``g'`` itself, so the feedback costs no
extra pass. ``softplus`` follows torch (``x`` itself above 20) and ``log1p`` is computed
exactly (Goldberg's ``log(u)·e/(u − 1)``), so float64 runs match the reference to rounding.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import BLOCK, compute_type, grid, sigmoid, units, valid_rows

LIGRU, PROBS, LOGPROBS = 0, 1, 2


@triton.jit
def _log1p(e):
    u = 1.0 + e
    return tl.where(u == 1.0, e, tl.log(u) * e / (u - 1.0))


@triton.jit
def _softplus(x):
    return tl.where(x > 20.0, x, _log1p(tl.exp(tl.minimum(x, 20.0))))


@triton.jit
def _log_feedback(h, EPS):
    return tl.log(tl.maximum(h, 0.0) + EPS)


@triton.jit
def _forward(xp, rec, h, mask, drop, h_out, y, act, fb, N, H, EPS, FORM: tl.constexpr, HAS_MASK: tl.constexpr,
             HAS_DROP: tl.constexpr, KEEP: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * 2 * H + j
    a1 = tl.load(xp + row, mask=ok).to(CT) + tl.load(rec + row, mask=ok).to(CT)
    az = tl.load(xp + row + H, mask=ok).to(CT) + tl.load(rec + row + H, mask=ok).to(CT)
    h0 = tl.load(h + offs, mask=ok)
    if FORM == 2:
        u = h0 - _softplus(-az)
        v = _softplus(a1) - _softplus(az)
        top = tl.maximum(u, v)
        h1 = top + _log1p(tl.exp(-tl.abs(u - v)))
        k1, k2 = a1, az
    else:
        z = sigmoid(az)
        if FORM == 0:
            c = tl.maximum(a1, 0.0)
            if HAS_DROP:
                c = c * tl.load(drop + offs, mask=ok).to(CT)
        else:
            c = sigmoid(a1)
        h1 = z * h0 + (1 - z) * c
        k1, k2 = c, z
    valid = valid_rows(mask, b, ok, HAS_MASK)
    h1 = tl.where(valid, h1, h0)
    tl.store(h_out + offs, h1, mask=ok)
    tl.store(y + offs, tl.where(valid, h1, 0.0).to(y.dtype.element_ty), mask=ok)
    if FORM == 1:
        tl.store(fb + offs, _log_feedback(h1, EPS).to(fb.dtype.element_ty), mask=ok)
    if KEEP:
        tl.store(act + row, k1.to(act.dtype.element_ty), mask=ok)
        tl.store(act + row + H, k2.to(act.dtype.element_ty), mask=ok)


@triton.jit
def _backward(act, h, h_new, mask, drop, dy, dh, dfb, dpre, N, H, EPS, FORM: tl.constexpr, HAS_MASK: tl.constexpr,
              HAS_DROP: tl.constexpr, HAS_DFB: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * 2 * H + j
    k1 = tl.load(act + row, mask=ok).to(CT)
    k2 = tl.load(act + row + H, mask=ok).to(CT)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    h0 = tl.load(h + offs, mask=ok)
    h1 = tl.load(h_new + offs, mask=ok)
    gh = tl.load(dh + offs, mask=ok) + tl.where(valid, tl.load(dy + offs, mask=ok).to(CT), 0.0)
    if HAS_DFB:  # the later step's feedback gradient through g(h') = log(max(h', 0) + ε)
        gh += tl.load(dfb + offs, mask=ok).to(CT) * tl.where(h1 >= 0, 1.0 / (tl.maximum(h1, 0.0) + EPS), 0.0)
    if FORM == 2:
        du = gh * tl.exp(h0 - _softplus(-k2) - h1)
        dv = gh * tl.exp(_softplus(k1) - _softplus(k2) - h1)
        d1 = dv * sigmoid(k1)
        dz = du * sigmoid(-k2) - dv * sigmoid(k2)
        direct = du
    else:
        c, z = k1, k2
        dc = gh * (1 - z)
        if FORM == 0:
            d1 = tl.where(c > 0, dc, 0.0)
            if HAS_DROP:
                d1 = d1 * tl.load(drop + offs, mask=ok).to(CT)
        else:
            d1 = dc * c * (1 - c)
        dz = gh * (h0 - c) * z * (1 - z)
        direct = gh * z
    tl.store(dpre + row, tl.where(valid, d1, 0.0), mask=ok)
    tl.store(dpre + row + H, tl.where(valid, dz, 0.0), mask=ok)
    tl.store(dh + offs, tl.where(valid, direct, gh), mask=ok)


@torch.library.custom_op("revrnn::light_forward_step", mutates_args=("h_out", "y", "act", "fb"))
def light_forward_step(xp: Tensor, rec: Tensor, h: Tensor, mask: Tensor | None, drop: Tensor | None,
                       h_out: Tensor, y: Tensor, act: Tensor | None, fb: Tensor | None, form: int, eps: float) -> None:
    """One step of form ``form`` (see the module docstring). ``xp``, ``rec`` (B, 2H); ``h``,
    ``h_out`` (B, H) in the state dtype; ``drop`` (B, H) LiGRU's dropout mask or None; ``fb``
    (B, H) receives ``g(h')`` for form 1 (in the GEMM dtype); ``eps`` is form 1's ε."""
    B, H = h.shape
    N = B * H
    _forward[grid(N)](xp, rec, h, h if mask is None else mask, h if drop is None else drop, h_out, y,
                      h if act is None else act, h if fb is None else fb, N, H, eps, FORM=form,
                      HAS_MASK=mask is not None, HAS_DROP=drop is not None, KEEP=act is not None,
                      CT=compute_type(h), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::light_backward_step", mutates_args=("dh", "dpre"))
def light_backward_step(act: Tensor, h: Tensor, h_new: Tensor, mask: Tensor | None, drop: Tensor | None,
                        dy: Tensor, dh: Tensor, dfb: Tensor | None, dpre: Tensor, form: int, eps: float) -> None:
    """Backward of one step: ``dpre`` (B, 2H) receives ``[da_1, da_z]``; ``dh`` goes from the
    gradient of ``h'`` (plus, with ``dfb``, the later step's feedback gradient through
    ``g(h')``) to the direct part of the previous state's."""
    B, H = dh.shape
    N = B * H
    _backward[grid(N)](act, h, h_new, dh if mask is None else mask, dh if drop is None else drop, dy, dh,
                       dh if dfb is None else dfb, dpre, N, H, eps, FORM=form, HAS_MASK=mask is not None,
                       HAS_DROP=drop is not None, HAS_DFB=dfb is not None, CT=compute_type(dh), BLOCK=BLOCK)
