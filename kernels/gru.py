"""GRU-family step kernels: the reset-after GRU (torch.nn.GRU) and the reset-before gated units
(GRU reset-before and MGU), each parametrised by the Dey & Salem / Heck & Salem gate variants.

Compile-time flags say which terms feed the gates: ``X`` (the projected input), ``HREC`` (the
recurrent GEMM) and ``GB`` (a gate bias vector); see ``revrnn.cells.gru.GATE_TERMS``.

**Reset-after** (one GEMM per step, ``rec = h W_hhᵀ``, rows r, z, n or n only)::

    r, z = σ(gate terms);  ĥn = rec_n + b_hn;  n = tanh(xp_n + r ĥn);  h' = z h + (1 − z) n

Activations kept: ``[r, z, n, ĥn]`` (B, 4H). Backward writes ``[da_r, da_z, dĥn, da_n]``.
With KAF gates (the KAF-GRU, :mod:`revrnn.kernels.kaf`) r and z are gated KAFs and the pre-activations
of r and z are kept in their place.

**Reset-before** (two dependent GEMMs; ``NG`` gates: 2 for the GRU (r, z), 1 for the MGU (f)):

1. :func:`reset_gates_step` — gates from their terms, and the GEMM operand ``ρ ⊙ h`` with the
   reset ρ = r (GRU) or f (MGU);
2. the backend's GEMM ``rec = (ρ ⊙ h) W_nᵀ``, then :func:`reset_update_step` —
   ``n = tanh(xp_n + rec)``, ``h' = κ h + (1 − κ) n`` with the keep gate κ = z (GRU) or 1 − f (MGU).

Activations kept: ``[gates, n]`` (B, (NG + 1)H). Backward runs the two stages in reverse with
the GEMM ``d(ρ ⊙ h) = da_n W_n`` between them, and writes the pre-activation gradients in the
same layout.

A row whose ``mask`` is false keeps its state, outputs 0 and passes its gradient through.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import BLOCK, compute_type, grid, sigmoid, tanh, units, valid_rows
from .kaf import kaf_args, kept_gate, load_gamma, sigmoid_or_kaf


@triton.jit
def _gate(xp, rec, gb, b, j, q, H, ok, GX, GR, X: tl.constexpr, HREC: tl.constexpr, GB: tl.constexpr,
          CT: tl.constexpr):
    """Pre-activation of gate ``q`` of unit ``j`` in row ``b`` from the terms that feed it."""
    a = tl.zeros([j.shape[0]], dtype=CT)
    if X:
        a += tl.load(xp + b * GX + q * H + j, mask=ok).to(CT)
    if HREC:
        a += tl.load(rec + b * GR + q * H + j, mask=ok).to(CT)
    if GB:
        a += tl.load(gb + q * H + j, mask=ok).to(CT)
    return a


@triton.jit
def _blend(kappa, n, h, mask, h_out, y, offs, ok, b, HAS_MASK: tl.constexpr):
    """The new state ``κ h + (1 − κ) n`` on valid rows (the old one elsewhere) into ``h_out``,
    and the output ``y`` (0 on masked rows)."""
    h0 = tl.load(h + offs, mask=ok)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    h1 = tl.where(valid, kappa * h0 + (1 - kappa) * n, h0)
    tl.store(h_out + offs, h1, mask=ok)
    tl.store(y + offs, tl.where(valid, h1, 0.0).to(y.dtype.element_ty), mask=ok)


@triton.jit
def _after_forward(xp, rec, gb, bhn, h, mask, alpha, dictionary, gamma, h_out, y, act, N, H, GX, GR, D,
                   X: tl.constexpr, HREC: tl.constexpr, GB: tl.constexpr, BHN: tl.constexpr, KAF: tl.constexpr,
                   HAS_MASK: tl.constexpr, KEEP: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    gam = load_gamma(gamma, KAF, CT)
    sr = _gate(xp, rec, gb, b, j, 0, H, ok, GX, GR, X, HREC, GB, CT)
    sz = _gate(xp, rec, gb, b, j, 1, H, ok, GX, GR, X, HREC, GB, CT)
    r = sigmoid_or_kaf(sr, alpha, dictionary, gam, 0, j, H, ok, D, KAF)
    z = sigmoid_or_kaf(sz, alpha, dictionary, gam, 1, j, H, ok, D, KAF)
    hn = tl.load(rec + b * GR + (GR - H) + j, mask=ok).to(CT)
    if BHN:
        hn += tl.load(bhn + j, mask=ok).to(CT)
    n = tanh(tl.load(xp + b * GX + (GX - H) + j, mask=ok).to(CT) + r * hn)
    _blend(z, n, h, mask, h_out, y, offs, ok, b, HAS_MASK)
    if KEEP:
        ty = act.dtype.element_ty  # on its own: a dtype cannot be a tuple element when compiled
        row = b * 4 * H + j
        if KAF:  # the pre-activations, for backward to recompute gates and slopes
            r, z = sr, sz
        tl.store(act + row, r.to(ty), mask=ok)
        tl.store(act + row + H, z.to(ty), mask=ok)
        tl.store(act + row + 2 * H, n.to(ty), mask=ok)
        tl.store(act + row + 3 * H, hn.to(ty), mask=ok)


@triton.jit
def _after_backward(act, h, mask, alpha, dictionary, gamma, dy, dh, dpre, dkaf, N, H, D, KAF: tl.constexpr,
                    HAS_MASK: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * 4 * H + j
    gam = load_gamma(gamma, KAF, CT)
    r, sr = kept_gate(tl.load(act + row, mask=ok).to(CT), alpha, dictionary, gam, 0, j, H, ok, D, KAF)
    z, sz = kept_gate(tl.load(act + row + H, mask=ok).to(CT), alpha, dictionary, gam, 1, j, H, ok, D, KAF)
    n = tl.load(act + row + 2 * H, mask=ok).to(CT)
    hn = tl.load(act + row + 3 * H, mask=ok).to(CT)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    gh = tl.load(dh + offs, mask=ok) + tl.where(valid, tl.load(dy + offs, mask=ok).to(CT), 0.0)
    h0 = tl.load(h + offs, mask=ok)
    dn = gh * (1 - z) * (1 - n * n)
    dr, dz = dn * hn, gh * (h0 - n)  # gradients of the gates' values
    zero = tl.zeros_like(gh)
    tl.store(dpre + row, tl.where(valid, dr * sr, zero), mask=ok)
    tl.store(dpre + row + H, tl.where(valid, dz * sz, zero), mask=ok)
    tl.store(dpre + row + 2 * H, tl.where(valid, dn * r, zero), mask=ok)
    tl.store(dpre + row + 3 * H, tl.where(valid, dn, zero), mask=ok)
    if KAF:  # ∂g/∂KAF = ½ g (1 − g)
        krow = b * 2 * H + j
        tl.store(dkaf + krow, tl.where(valid, 0.5 * dr * r * (1 - r), zero), mask=ok)
        tl.store(dkaf + krow + H, tl.where(valid, 0.5 * dz * z * (1 - z), zero), mask=ok)
    tl.store(dh + offs, tl.where(valid, gh * z, gh), mask=ok)


@triton.jit
def _reset_forward(xp, rec, gb, h, gates, rh, N, H, GX, GR, NG: tl.constexpr,
                   X: tl.constexpr, HREC: tl.constexpr, GB: tl.constexpr, KEEP: tl.constexpr,
                   CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    rho = sigmoid(_gate(xp, rec, gb, b, j, 0, H, ok, GX, GR, X, HREC, GB, CT))
    tl.store(rh + offs, (rho * tl.load(h + offs, mask=ok)).to(rh.dtype.element_ty), mask=ok)
    if KEEP:
        row = b * (NG + 1) * H + j
        tl.store(gates + row, rho.to(gates.dtype.element_ty), mask=ok)
        if NG == 2:
            z = sigmoid(_gate(xp, rec, gb, b, j, 1, H, ok, GX, GR, X, HREC, GB, CT))
            tl.store(gates + row + H, z.to(gates.dtype.element_ty), mask=ok)


@triton.jit
def _keep_gate(xp, rec, gb, act, b, j, H, ok, GX, GR, NG: tl.constexpr, X: tl.constexpr, HREC: tl.constexpr,
               GB: tl.constexpr, FROM_ACT: tl.constexpr, CT: tl.constexpr):
    """κ: z (GRU) or 1 − f (MGU), from the kept activations or recomputed from the gate terms."""
    q = NG - 1
    if FROM_ACT:
        g = tl.load(act + b * (NG + 1) * H + q * H + j, mask=ok).to(CT)
    else:
        g = sigmoid(_gate(xp, rec, gb, b, j, q, H, ok, GX, GR, X, HREC, GB, CT))
    if NG == 1:
        g = 1 - g
    return g


@triton.jit
def _update_forward(xp, rec1, gb, rec2, h, mask, h_out, y, act, N, H, GX, GR, NG: tl.constexpr,
                    X: tl.constexpr, HREC: tl.constexpr, GB: tl.constexpr, HAS_MASK: tl.constexpr,
                    KEEP: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    kappa = _keep_gate(xp, rec1, gb, act, b, j, H, ok, GX, GR, NG, X, HREC, GB, KEEP, CT)
    n = tanh(tl.load(xp + b * GX + (GX - H) + j, mask=ok).to(CT) + tl.load(rec2 + offs, mask=ok).to(CT))
    _blend(kappa, n, h, mask, h_out, y, offs, ok, b, HAS_MASK)
    if KEEP:
        tl.store(act + b * (NG + 1) * H + NG * H + j, n.to(act.dtype.element_ty), mask=ok)


@triton.jit
def _update_backward(act, h, mask, dy, dh, dpre, N, H, NG: tl.constexpr, HAS_MASK: tl.constexpr,
                     CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * (NG + 1) * H + j
    g = tl.load(act + row + (NG - 1) * H, mask=ok).to(CT)
    kappa = g if NG == 2 else 1 - g
    n = tl.load(act + row + NG * H, mask=ok).to(CT)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    gh = tl.load(dh + offs, mask=ok) + tl.where(valid, tl.load(dy + offs, mask=ok).to(CT), 0.0)
    dkappa = gh * (tl.load(h + offs, mask=ok) - n)
    zero = tl.zeros_like(gh)
    tl.store(dpre + row + NG * H, tl.where(valid, gh * (1 - kappa) * (1 - n * n), zero), mask=ok)
    # the keep gate's share of its gate gradient: complete for the GRU's z; the MGU's f also
    # resets, so stage 1 adds that share and applies σ'
    if NG == 2:
        tl.store(dpre + row + H, tl.where(valid, dkappa * g * (1 - g), zero), mask=ok)
    else:
        tl.store(dpre + row, tl.where(valid, -dkappa, zero), mask=ok)
    tl.store(dh + offs, tl.where(valid, gh * kappa, gh), mask=ok)


@triton.jit
def _reset_backward(act, h, mask, drh, dh, dpre, N, H, NG: tl.constexpr, HAS_MASK: tl.constexpr,
                    CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    row = b * (NG + 1) * H + j
    rho = tl.load(act + row, mask=ok).to(CT)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    d = tl.load(drh + offs, mask=ok).to(CT)
    drho = d * tl.load(h + offs, mask=ok)
    if NG == 1:
        drho += tl.load(dpre + row, mask=ok)
    tl.store(dpre + row, tl.where(valid, drho * rho * (1 - rho), 0.0), mask=ok)
    tl.store(dh + offs, tl.load(dh + offs, mask=ok) + tl.where(valid, d * rho, 0.0), mask=ok)


def _flags(xp: Tensor, rec: Tensor | None, gb: Tensor | None, H: int, hrec: bool) -> dict:
    """The gate-term flags and row widths of the projected input and of the GEMM ``rec``
    (the projection has gate columns iff it is wider than the candidate's H)."""
    return dict(GX=xp.shape[1], GR=0 if rec is None else rec.shape[1], X=xp.shape[1] > H, HREC=hrec,
                GB=gb is not None)


@torch.library.custom_op("revrnn::gru_forward_step", mutates_args=("h_out", "y", "act"))
def gru_forward_step(xp: Tensor, rec: Tensor, gb: Tensor | None, bhn: Tensor | None, h: Tensor,
                     mask: Tensor | None, kaf: list[Tensor], h_out: Tensor, y: Tensor, act: Tensor | None) -> None:
    """One reset-after step. ``xp`` (B, 3H) or (B, H) (no input gate terms); ``rec`` (B, 3H)
    or (B, H) (no recurrent gate terms); ``gb`` (2H) gate bias; ``bhn`` (H) the recurrent
    candidate bias; ``h``, ``h_out`` (B, H) in the state dtype; ``act`` (B, 4H) or None;
    ``kaf`` empty, or the KAF-GRU's [alpha (2H, D), dictionary (D,), γ (1,)]: then r and z are
    gated KAFs and ``act`` keeps their pre-activations."""
    B, H = h.shape
    N = B * H
    alpha, dictionary, gamma, D = kaf_args(kaf, h)
    _after_forward[grid(N)](xp, rec, rec if gb is None else gb, rec if bhn is None else bhn, h,
                            h if mask is None else mask, alpha, dictionary, gamma, h_out, y,
                            h if act is None else act, N, H, **_flags(xp, rec, gb, H, rec.shape[1] > H), D=D,
                            BHN=bhn is not None, KAF=bool(kaf), HAS_MASK=mask is not None,
                            KEEP=act is not None, CT=compute_type(h), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::gru_backward_step", mutates_args=("dh", "dpre", "dkaf"))
def gru_backward_step(act: Tensor, h: Tensor, mask: Tensor | None, kaf: list[Tensor], dy: Tensor, dh: Tensor,
                      dpre: Tensor, dkaf: Tensor | None) -> None:
    """Backward of one reset-after step: ``dpre`` (B, 4H) receives ``[da_r, da_z, dĥn, da_n]``,
    ``dh`` goes from the new state's gradient to the direct part of the previous one's; with
    KAF gates ``dkaf`` (B, 2H) receives ``∂L/∂KAF`` of r and z."""
    B, H = dh.shape
    N = B * H
    alpha, dictionary, gamma, D = kaf_args(kaf, dh)
    _after_backward[grid(N)](act, h, dh if mask is None else mask, alpha, dictionary, gamma, dy, dh, dpre,
                             dh if dkaf is None else dkaf, N, H, D, KAF=bool(kaf),
                             HAS_MASK=mask is not None, CT=compute_type(dh), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::reset_gates_step", mutates_args=("rh", "gates"))
def reset_gates_step(xp: Tensor, rec: Tensor | None, gb: Tensor | None, h: Tensor, rh: Tensor,
                     gates: Tensor | None, num_gates: int) -> None:
    """Stage 1 of a reset-before step: ``rh`` (B, H) = ρ ⊙ h in the GEMM dtype; ``gates`` (the
    step's (B, (NG + 1)H) activations, or None) receives the gates."""
    B, H = h.shape
    N = B * H
    _reset_forward[grid(N)](xp, xp if rec is None else rec, xp if gb is None else gb, h,
                            rh if gates is None else gates, rh, N, H, NG=num_gates, **_flags(xp, rec, gb, H, rec is not None),
                            KEEP=gates is not None, CT=compute_type(h), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::reset_update_step", mutates_args=("h_out", "y", "act"))
def reset_update_step(xp: Tensor, rec1: Tensor | None, gb: Tensor | None, rec2: Tensor, h: Tensor,
                      mask: Tensor | None, h_out: Tensor, y: Tensor, act: Tensor | None, num_gates: int) -> None:
    """Stage 2 of a reset-before step, from ``rec2`` = (ρ ⊙ h) W_nᵀ. Without ``act`` the keep
    gate is recomputed from its terms (``xp``, ``rec1``, ``gb`` as in stage 1)."""
    B, H = h.shape
    N = B * H
    _update_forward[grid(N)](xp, xp if rec1 is None else rec1, xp if gb is None else gb, rec2, h,
                             h if mask is None else mask, h_out, y, h if act is None else act, N, H,
                             NG=num_gates, **_flags(xp, rec1, gb, H, rec1 is not None), HAS_MASK=mask is not None,
                             KEEP=act is not None, CT=compute_type(h), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::reset_update_backward", mutates_args=("dh", "dpre"))
def reset_update_backward(act: Tensor, h: Tensor, mask: Tensor | None, dy: Tensor, dh: Tensor, dpre: Tensor,
                          num_gates: int) -> None:
    """Backward of stage 2: ``dpre[:, NG·H:]`` receives ``da_n``, the keep gate's column its
    share, ``dh`` the direct part ``κ ⊙ dh'``."""
    B, H = dh.shape
    N = B * H
    _update_backward[grid(N)](act, h, dh if mask is None else mask, dy, dh, dpre, N, H, NG=num_gates,
                              HAS_MASK=mask is not None, CT=compute_type(dh), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::reset_gates_backward", mutates_args=("dh", "dpre"))
def reset_gates_backward(act: Tensor, h: Tensor, mask: Tensor | None, drh: Tensor, dh: Tensor, dpre: Tensor,
                         num_gates: int) -> None:
    """Backward of stage 1 from ``drh`` = d(ρ ⊙ h): completes the reset gate's pre-activation
    gradient in ``dpre`` and adds ``ρ ⊙ drh`` to ``dh``."""
    B, H = dh.shape
    N = B * H
    _reset_backward[grid(N)](act, h, dh if mask is None else mask, drh, dh, dpre, N, H, NG=num_gates,
                             HAS_MASK=mask is not None, CT=compute_type(dh), BLOCK=BLOCK)
