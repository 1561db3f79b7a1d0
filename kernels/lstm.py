"""LSTM step kernels (torch.nn.LSTM, gate order i, f, g, o), optionally blended by the g-LSTM
time gate ``k``: ``h = k ĥ + (1 − k) h_prev`` where ``k > 0``, the previous state where not.

Per step the backend runs the recurrent GEMM ``rec = h W_hhᵀ`` in torch, then one of these:

* :func:`lstm_forward_step` — gates ``xp + rec``, the new state in float32, the output in the
  input dtype and (``keep``) the activations ``[σ(i), σ(f), tanh(g), σ(o)]`` for backward;
* :func:`lstm_backward_step` — from those activations, the previous cell state and the
  incoming gradients: the gate gradients (= the gradients of ``xp`` and of ``rec``), and the
  state gradients updated in place (the recurrent term ``dgates W_hh`` is the backend's GEMM).

A row whose ``mask`` is false keeps its state, outputs 0 and passes its gradient through.
The cell update is recomputed from the activations in backward, so nothing else is stored.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import BLOCK, compute_type, grid, sigmoid, tanh, units, valid_rows


@triton.jit
def _forward(xp, rec, h, c, mask, k, h_out, c_out, y, act, N, H,
             HAS_MASK: tl.constexpr, HAS_K: tl.constexpr, KEEP: tl.constexpr, CT: tl.constexpr,
             BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * 4 * H + j
    ai = tl.load(xp + row, mask=ok).to(CT) + tl.load(rec + row, mask=ok).to(CT)
    af = tl.load(xp + row + H, mask=ok).to(CT) + tl.load(rec + row + H, mask=ok).to(CT)
    ag = tl.load(xp + row + 2 * H, mask=ok).to(CT) + tl.load(rec + row + 2 * H, mask=ok).to(CT)
    ao = tl.load(xp + row + 3 * H, mask=ok).to(CT) + tl.load(rec + row + 3 * H, mask=ok).to(CT)
    i, f, g, o = sigmoid(ai), sigmoid(af), tanh(ag), sigmoid(ao)
    h0 = tl.load(h + offs, mask=ok).to(CT)
    c0 = tl.load(c + offs, mask=ok).to(CT)
    c1 = f * c0 + i * g
    h1 = o * tanh(c1)
    live = ok
    if HAS_K:
        kk = tl.load(k + j, mask=ok).to(CT)
        c1 = kk * c1 + (1 - kk) * c0
        h1 = kk * h1 + (1 - kk) * h0
        live = live & (kk > 0)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    live = live & valid
    h1 = tl.where(live, h1, h0)
    tl.store(h_out + offs, h1, mask=ok)
    tl.store(c_out + offs, tl.where(live, c1, c0), mask=ok)
    tl.store(y + offs, tl.where(valid, h1, 0.0).to(y.dtype.element_ty), mask=ok)
    if KEEP:
        ty = act.dtype.element_ty
        tl.store(act + row, i.to(ty), mask=ok)
        tl.store(act + row + H, f.to(ty), mask=ok)
        tl.store(act + row + 2 * H, g.to(ty), mask=ok)
        tl.store(act + row + 3 * H, o.to(ty), mask=ok)


@triton.jit
def _backward(act, h, c, mask, k, dy, dh, dc, dgates, dk, N, H,
              HAS_MASK: tl.constexpr, HAS_K: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * 4 * H + j
    i = tl.load(act + row, mask=ok).to(CT)
    f = tl.load(act + row + H, mask=ok).to(CT)
    g = tl.load(act + row + 2 * H, mask=ok).to(CT)
    o = tl.load(act + row + 3 * H, mask=ok).to(CT)
    c0 = tl.load(c + offs, mask=ok).to(CT)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    # gradients of the new state; the output is the new h on valid rows
    gh = tl.load(dh + offs, mask=ok) + tl.where(valid, tl.load(dy + offs, mask=ok).to(CT), 0.0)
    gc = tl.load(dc + offs, mask=ok)
    c1 = f * c0 + i * g
    t1 = tanh(c1)
    live = valid
    gh_cell, gc_cell = gh, gc  # gradients of the LSTM update's own h, c
    if HAS_K:
        kk = tl.load(k + j, mask=ok).to(CT)
        live = live & (kk > 0)
        h0 = tl.load(h + offs, mask=ok).to(CT)
        tl.store(dk + offs, tl.where(live, gh * (o * t1 - h0) + gc * (c1 - c0), 0.0), mask=ok)
        gh_cell, gc_cell = gh * kk, gc * kk
    gcell = gc_cell + gh_cell * o * (1 - t1 * t1)
    zero = tl.zeros_like(gh)
    tl.store(dgates + row, tl.where(live, gcell * g * i * (1 - i), zero), mask=ok)
    tl.store(dgates + row + H, tl.where(live, gcell * c0 * f * (1 - f), zero), mask=ok)
    tl.store(dgates + row + 2 * H, tl.where(live, gcell * i * (1 - g * g), zero), mask=ok)
    tl.store(dgates + row + 3 * H, tl.where(live, gh_cell * t1 * o * (1 - o), zero), mask=ok)
    # the previous state's direct gradients (the recurrent part of dh is the backend's GEMM);
    # rows and units that did not update pass theirs through
    dh_prev, dc_prev = zero, gcell * f
    if HAS_K:
        dh_prev, dc_prev = gh * (1 - kk), dc_prev + gc * (1 - kk)
    tl.store(dh + offs, tl.where(live, dh_prev, gh), mask=ok)
    tl.store(dc + offs, tl.where(live, dc_prev, gc), mask=ok)


@torch.library.custom_op("revrnn::lstm_forward_step", mutates_args=("h_out", "c_out", "y", "act"))
def lstm_forward_step(xp: Tensor, rec: Tensor, h: Tensor, c: Tensor, mask: Tensor | None, k: Tensor | None,
                      h_out: Tensor, c_out: Tensor, y: Tensor, act: Tensor | None) -> None:
    """One LSTM step over (B, H) units; see the module docstring. All tensors contiguous:
    ``xp``, ``rec`` (B, 4H); ``h``, ``c``, ``h_out``, ``c_out`` (B, H) in the state dtype (float32, or float64 for float64 input); ``y`` (B, H);
    ``act`` (B, 4H) or None; ``mask`` (B,) uint8 or None; ``k`` (H,) or None."""
    B, H = h.shape
    N = B * H
    _forward[grid(N)](xp, rec, h, c, xp if mask is None else mask, xp if k is None else k,
                      h_out, c_out, y, xp if act is None else act, N, H,
                      HAS_MASK=mask is not None, HAS_K=k is not None, KEEP=act is not None, CT=compute_type(h), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::lstm_backward_step", mutates_args=("dh", "dc", "dgates", "dk"))
def lstm_backward_step(act: Tensor, h: Tensor, c: Tensor, mask: Tensor | None, k: Tensor | None, dy: Tensor,
                       dh: Tensor, dc: Tensor, dgates: Tensor, dk: Tensor | None) -> None:
    """Backward of one step: ``dgates`` (B, 4H) in the state dtype receives the gate gradients; ``dh``,
    ``dc`` (B, H) go from the gradients of the new state to the direct part of the
    previous one; ``dk`` (B, H) (with ``k``) receives the time gate's gradient per row.
    ``h`` is the previous hidden state (read only with ``k``), ``c`` the previous cell state."""
    B, H = dh.shape
    N = B * H
    _backward[grid(N)](act, h, c, act if mask is None else mask, act if k is None else k, dy, dh, dc, dgates,
                       dh if dk is None else dk, N, H,
                       HAS_MASK=mask is not None, HAS_K=k is not None, CT=compute_type(dh), BLOCK=BLOCK)
