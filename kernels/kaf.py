"""Gated kernel activation functions (KAF-LSTM, KAF-GRU; :mod:`revrnn.cells.kaf`) for the step
kernels, and the reduction that gives the mixing coefficients their gradient.

``g(s) = σ(½ s + ½ KAF(s))`` with ``KAF(s) = Σ_i α_{n,i} exp(−γ (s − d_i)²)`` per unit n. The
step kernels call :func:`kaf_gate` where they would call ``sigmoid`` and keep the
pre-activation ``s`` instead of the gate, so backward recomputes ``g`` and its slope from ``s``
and nothing of size D is stored. Backward also writes ``∂L/∂KAF = ∂L/∂g · ½ g (1 − g)`` per
gate; :func:`alpha_grad` turns those and the kept ``s`` into ``∂L/∂α`` for a whole chunk:

    ∂L/∂α_{n,i} = Σ_rows ∂L/∂KAF_{row,n} · exp(−γ (s_{row,n} − d_i)²)

``γ`` is passed as a one-element tensor of the state dtype, because a Python float would reach
the kernel as float32 and float64 runs need it exact.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import compute_type, new, sigmoid


@triton.jit
def kaf_gate(s, alpha, dictionary, gamma, n, ok, D):
    """The gated KAF of ``s`` with row ``n`` of ``alpha`` (elementwise), and its slope ``dg/ds``."""
    k = tl.zeros_like(s)
    dk = tl.zeros_like(s)
    for i in range(D):
        e = s - tl.load(dictionary + i).to(s.dtype)
        w = tl.load(alpha + n * D + i, mask=ok, other=0.0).to(s.dtype) * tl.exp(-gamma * e * e)
        k += w
        dk += w * e
    g = sigmoid(0.5 * (s + k))
    return g, 0.5 * g * (1 - g) * (1 - 2 * gamma * dk)


@triton.jit
def sigmoid_or_kaf(s, alpha, dictionary, gamma, q, j, H, ok, D, KAF: tl.constexpr):
    """Sigmoid gate number ``q`` of units ``j`` from its pre-activation ``s``, or its gated KAF
    (row ``q·H + j`` of α)."""
    if KAF:
        g = kaf_gate(s, alpha, dictionary, gamma, q * H + j, ok, D)[0]
    else:
        g = sigmoid(s)
    return g


@triton.jit
def kept_gate(v, alpha, dictionary, gamma, q, j, H, ok, D, KAF: tl.constexpr):
    """Gate ``q`` and its slope from its kept activation ``v``: the gate itself, or with KAF
    gates its pre-activation."""
    if KAF:
        g, slope = kaf_gate(v, alpha, dictionary, gamma, q * H + j, ok, D)
    else:
        g, slope = v, v * (1 - v)
    return g, slope


@triton.jit
def load_gamma(gamma, KAF: tl.constexpr, CT: tl.constexpr):
    """γ in the compute type (unused without KAF gates). One return of one type: the compiler
    types both branches even when one is discarded."""
    if KAF:
        g = tl.load(gamma).to(CT)
    else:
        g = tl.zeros((), CT)
    return g


def kaf_args(kaf: list[Tensor], like: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """(alpha, dictionary, gamma, D) for a step kernel from its ``kaf`` argument (empty, or
    [alpha, dictionary, gamma]); ``like`` stands in for absent tensors."""
    if not kaf:
        return like, like, like, 0
    alpha, dictionary, gamma = kaf
    return alpha, dictionary, gamma, dictionary.shape[0]


@triton.jit
def _alpha_grad(pre, dkaf, dictionary, gamma, part, R, ROWS, NK, D, H, PRE_STRIDE, SKIP,
                CT: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
    """One (units, dictionary entries) tile of the partial sum over rows ``ROWS·s ...`` of slice
    ``s`` = program_id(2), written to ``part[s]``."""
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    i = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    r0 = tl.program_id(2) * ROWS
    ok_n, ok_d = n < NK, i < D
    # column of unit n's pre-activation among the kept activations (the LSTM keeps g between f and o)
    col = n + tl.where(n >= SKIP, H, 0)
    d = tl.load(dictionary + i, mask=ok_d, other=0.0).to(CT)
    gam = tl.load(gamma).to(CT)
    acc = tl.zeros([BLOCK_N, BLOCK_D], dtype=CT)
    # pointers advance row by row: 64-bit, where row · stride could pass 2**31
    p_pre = pre + r0.to(tl.int64) * PRE_STRIDE + col
    p_dkaf = dkaf + r0.to(tl.int64) * NK + n
    for _ in range(r0, tl.minimum(r0 + ROWS, R)):
        s = tl.load(p_pre, mask=ok_n, other=0.0).to(CT)
        u = tl.load(p_dkaf, mask=ok_n, other=0.0).to(CT)
        e = s[:, None] - d[None, :]
        acc += u[:, None] * tl.exp(-gam * e * e)
        p_pre += PRE_STRIDE
        p_dkaf += NK
    out = part + tl.program_id(2).to(tl.int64) * NK * D
    tl.store(out + n[:, None] * D + i[None, :], acc, mask=ok_n[:, None] & ok_d[None, :])


#: tile of :func:`alpha_grad` (units × dictionary entries), and at most how many slices of
#: rows it sums separately (a grid wide enough for a GPU; the slices' sums are added in torch)
ALPHA_BLOCK_N, ALPHA_BLOCK_D, ALPHA_SLICES = 32, 32, 32


@torch.library.custom_op("revrnn::kaf_alpha_grad", mutates_args=())
def alpha_grad(pre: Tensor, dkaf: Tensor, dictionary: Tensor, gamma: Tensor, hidden: int, skip: int) -> Tensor:
    """``∂L/∂α`` (NK, D) in ``dkaf``'s dtype from a chunk's kept activations ``pre`` (K, B, C) and
    the KAF gradients ``dkaf`` (K, B, NK), NK = gates·H, H = ``hidden``; KAF gate ``q`` of unit
    ``j`` (row ``n = q·H + j`` of α) reads column ``n`` of ``pre``, or ``n + H`` when ``n ≥ skip``."""
    K, B, NK = dkaf.shape
    D, R = dictionary.shape[0], K * B
    pre, dkaf = pre.contiguous(), dkaf.contiguous()
    slices = max(min(R, ALPHA_SLICES), 1)
    rows = triton.cdiv(R, slices)
    part = new((slices, NK, D), dkaf.dtype, dkaf.device)
    block_d = min(triton.next_power_of_2(D), ALPHA_BLOCK_D)
    grid = (triton.cdiv(NK, ALPHA_BLOCK_N), triton.cdiv(D, block_d), slices)
    _alpha_grad[grid](pre, dkaf, dictionary, gamma, part, R, rows, NK, D, hidden, pre.shape[-1], skip,
                      CT=compute_type(dkaf), BLOCK_N=ALPHA_BLOCK_N, BLOCK_D=block_d)
    return part.sum(0)


@alpha_grad.register_fake
def _(pre, dkaf, dictionary, gamma, hidden, skip):
    return dkaf.new_empty(dkaf.shape[-1], dictionary.shape[0])
