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

Two options change what a kernel reads and writes:

* **KAF gates** (``kaf`` given; :mod:`revrnn.kernels.kaf`): i, f, o are gated KAFs of their
  pre-activations, and ``act`` keeps those pre-activations (``[s_i, s_f, tanh(g), s_o]``) from
  which backward recomputes gates and slopes; backward also writes ``∂L/∂KAF`` (B, 3H).
* **Projection** (``proj``): the kernels handle the cell state and the unprojected output
  ``o ⊙ tanh(c)`` only. Forward writes that output for every row to ``h_out`` (B, H) and no
  ``y``; the backend projects it and applies the mask to ``h``. Backward takes the gradient of
  that output in ``dh`` (zero on masked rows, ``dy`` folded in by the backend) and writes the
  output again to ``hc`` for the weight gradient of the projection.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import BLOCK, compute_type, grid, tanh, units, valid_rows
from .kaf import kaf_args, kept_gate, load_gamma, sigmoid_or_kaf


@triton.jit
def _forward(xp, rec, h, c, mask, k, alpha, dictionary, gamma, h_out, c_out, y, act, N, H, D,
             HAS_MASK: tl.constexpr, HAS_K: tl.constexpr, KAF: tl.constexpr, PROJ: tl.constexpr,
             KEEP: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * 4 * H + j
    ai = tl.load(xp + row, mask=ok).to(CT) + tl.load(rec + row, mask=ok).to(CT)
    af = tl.load(xp + row + H, mask=ok).to(CT) + tl.load(rec + row + H, mask=ok).to(CT)
    ag = tl.load(xp + row + 2 * H, mask=ok).to(CT) + tl.load(rec + row + 2 * H, mask=ok).to(CT)
    ao = tl.load(xp + row + 3 * H, mask=ok).to(CT) + tl.load(rec + row + 3 * H, mask=ok).to(CT)
    gam = load_gamma(gamma, KAF, CT)
    i = sigmoid_or_kaf(ai, alpha, dictionary, gam, 0, j, H, ok, D, KAF)
    f = sigmoid_or_kaf(af, alpha, dictionary, gam, 1, j, H, ok, D, KAF)
    o = sigmoid_or_kaf(ao, alpha, dictionary, gam, 2, j, H, ok, D, KAF)
    g = tanh(ag)
    c0 = tl.load(c + offs, mask=ok).to(CT)
    c1 = f * c0 + i * g
    h1 = o * tanh(c1)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    live = valid
    if HAS_K:  # the g-LSTM (never projected)
        kk = tl.load(k + j, mask=ok).to(CT)
        h0 = tl.load(h + offs, mask=ok).to(CT)
        c1 = kk * c1 + (1 - kk) * c0
        h1 = kk * h1 + (1 - kk) * h0
        live = live & (kk > 0)
    elif not PROJ:
        h0 = tl.load(h + offs, mask=ok).to(CT)
    tl.store(c_out + offs, tl.where(live, c1, c0), mask=ok)
    if PROJ:
        tl.store(h_out + offs, h1, mask=ok)
    else:
        h1 = tl.where(live, h1, h0)
        tl.store(h_out + offs, h1, mask=ok)
        tl.store(y + offs, tl.where(valid, h1, 0.0).to(y.dtype.element_ty), mask=ok)
    if KEEP:
        ty = act.dtype.element_ty
        if KAF:  # the pre-activations, for backward to recompute gates and slopes
            i, f, o = ai, af, ao
        tl.store(act + row, i.to(ty), mask=ok)
        tl.store(act + row + H, f.to(ty), mask=ok)
        tl.store(act + row + 2 * H, g.to(ty), mask=ok)
        tl.store(act + row + 3 * H, o.to(ty), mask=ok)


@triton.jit
def _backward(act, h, c, mask, k, alpha, dictionary, gamma, dy, dh, dc, dgates, dk, dkaf, hc, N, H, D,
              HAS_MASK: tl.constexpr, HAS_K: tl.constexpr, KAF: tl.constexpr, PROJ: tl.constexpr,
              CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * 4 * H + j
    gam = load_gamma(gamma, KAF, CT)
    i, si = kept_gate(tl.load(act + row, mask=ok).to(CT), alpha, dictionary, gam, 0, j, H, ok, D, KAF)
    f, sf = kept_gate(tl.load(act + row + H, mask=ok).to(CT), alpha, dictionary, gam, 1, j, H, ok, D, KAF)
    o, so = kept_gate(tl.load(act + row + 3 * H, mask=ok).to(CT), alpha, dictionary, gam, 2, j, H, ok, D, KAF)
    g = tl.load(act + row + 2 * H, mask=ok).to(CT)
    c0 = tl.load(c + offs, mask=ok).to(CT)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    # gradients of the new state; the output is the new h on valid rows (folded in by the
    # backend when projecting)
    gh = tl.load(dh + offs, mask=ok)
    if not PROJ:
        gh += tl.where(valid, tl.load(dy + offs, mask=ok).to(CT), 0.0)
    gc = tl.load(dc + offs, mask=ok)
    c1 = f * c0 + i * g
    t1 = tanh(c1)
    if PROJ:
        tl.store(hc + offs, o * t1, mask=ok)
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
    # gradients of the gates' values
    di, df, do = gcell * g, gcell * c0, gh_cell * t1
    tl.store(dgates + row, tl.where(live, di * si, zero), mask=ok)
    tl.store(dgates + row + H, tl.where(live, df * sf, zero), mask=ok)
    tl.store(dgates + row + 2 * H, tl.where(live, gcell * i * (1 - g * g), zero), mask=ok)
    tl.store(dgates + row + 3 * H, tl.where(live, do * so, zero), mask=ok)
    if KAF:  # ∂g/∂KAF = ½ g (1 − g)
        krow = b * 3 * H + j
        tl.store(dkaf + krow, tl.where(live, 0.5 * di * i * (1 - i), zero), mask=ok)
        tl.store(dkaf + krow + H, tl.where(live, 0.5 * df * f * (1 - f), zero), mask=ok)
        tl.store(dkaf + krow + 2 * H, tl.where(live, 0.5 * do * o * (1 - o), zero), mask=ok)
    # the previous state's direct gradients (the recurrent part of dh is the backend's GEMM);
    # rows and units that did not update pass theirs through
    dh_prev, dc_prev = zero, gcell * f
    if HAS_K:
        dh_prev, dc_prev = gh * (1 - kk), dc_prev + gc * (1 - kk)
    tl.store(dh + offs, tl.where(live, dh_prev, gh), mask=ok)
    tl.store(dc + offs, tl.where(live, dc_prev, gc), mask=ok)


@torch.library.custom_op("revrnn::lstm_forward_step", mutates_args=("h_out", "c_out", "y", "act"))
def lstm_forward_step(xp: Tensor, rec: Tensor, h: Tensor | None, c: Tensor, mask: Tensor | None, k: Tensor | None,
                      kaf: list[Tensor], h_out: Tensor, c_out: Tensor, y: Tensor | None,
                      act: Tensor | None) -> None:
    """One LSTM step over (B, H) units; see the module docstring. All tensors contiguous:
    ``xp``, ``rec`` (B, 4H); ``h``, ``c``, ``h_out``, ``c_out`` (B, H) in the state dtype
    (float32, or float64 for float64 input); ``y`` (B, H), None when projecting (then ``h`` is
    not read); ``act`` (B, 4H) or None; ``mask`` (B,) uint8 or None; ``k`` (H,) or None;
    ``kaf`` empty or [alpha (3H, D), dictionary (D,), gamma (1,) in the state dtype]."""
    B, H = c.shape
    N = B * H
    alpha, dictionary, gamma, D = kaf_args(kaf, xp)
    _forward[grid(N)](xp, rec, xp if h is None else h, c, xp if mask is None else mask, xp if k is None else k,
                      alpha, dictionary, gamma, h_out, c_out, xp if y is None else y, xp if act is None else act,
                      N, H, D, HAS_MASK=mask is not None, HAS_K=k is not None, KAF=bool(kaf),
                      PROJ=y is None, KEEP=act is not None, CT=compute_type(c), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::lstm_backward_step", mutates_args=("dh", "dc", "dgates", "dk", "dkaf", "hc"))
def lstm_backward_step(act: Tensor, h: Tensor | None, c: Tensor, mask: Tensor | None, k: Tensor | None,
                       kaf: list[Tensor], dy: Tensor | None, dh: Tensor, dc: Tensor, dgates: Tensor,
                       dk: Tensor | None, dkaf: Tensor | None, hc: Tensor | None) -> None:
    """Backward of one step: ``dgates`` (B, 4H) in the state dtype receives the gate gradients; ``dh``,
    ``dc`` (B, H) go from the gradients of the new state to the direct part of the
    previous one; ``dk`` (B, H) (with ``k``) receives the time gate's gradient per row.
    ``h`` is the previous hidden state (read only with ``k``), ``c`` the previous cell state.
    With KAF gates, ``dkaf`` (B, 3H) receives ``∂L/∂KAF`` of i, f, o. ``dy`` None means a
    projecting LSTM: then ``hc`` (B, H) receives the unprojected output."""
    B, H = dh.shape
    N = B * H
    alpha, dictionary, gamma, D = kaf_args(kaf, act)
    _backward[grid(N)](act, act if h is None else h, c, act if mask is None else mask, act if k is None else k,
                       alpha, dictionary, gamma, act if dy is None else dy, dh, dc, dgates,
                       dh if dk is None else dk, dh if dkaf is None else dkaf, dh if hc is None else hc, N, H, D,
                       HAS_MASK=mask is not None, HAS_K=k is not None, KAF=bool(kaf), PROJ=dy is None,
                       CT=compute_type(dh), BLOCK=BLOCK)
