"""NRU step kernels (:mod:`revrnn.cells.nru`): the work of a step around its two GEMMs, which
the backend runs in torch. ``S = [h; m]`` is a state row of L = H + M columns; ``u_t = [h_t;
m_{t-1}]`` is the heads' input.

Forward, per step:

1. ``rec = S_{t-1} W_hhᵀ`` (GEMM);
2. :func:`nru_hidden_step`: ``h_t = ReLU(xp + rec)`` and the output; ``S_t ← u_t``;
3. ``heads = u_t W_headsᵀ + b`` (GEMM): ``[α, β, p_α, q_α, p_β, q_β]``, k + k + 4·r columns;
4. :func:`nru_memory_step`: one program per batch row computes the k write and k erase vectors
   on a (head, slot) tile as :func:`revrnn.cells.nru.l5_heads` does (p, q divided by their
   max-abs, each head by its own, the L5 norm of the rescaled head against the rescaled floor
   ``ε / (s_p s_q a)``, so nothing overflows), and writes ``m_t = clamp(m_{t-1} + mean_j(α_j V_α,j
   − β_j V_β,j))`` into ``S_t``.

Backward, per step in reverse, with ``heads`` recomputed by the GEMM from the kept states:

1. :func:`nru_memory_backward` (one program per row): recomputes the vectors, writes the
   gradients of α, β and of the rescaled products ``p̂ q̂ᵀ`` (to a scratch buffer), and turns
   the gradient of ``m_t`` into the direct part of ``m_{t-1}``'s (zero on clamped slots);
2. :func:`nru_outer_backward` (one program per row): the gradients of p and q, sums of the
   products' gradients along q's and p's index; it reads them back as an r × r tile, since the
   (head, slot) tile of step 1 cannot be summed along those indices;
3. ``g += dheads W_heads`` (GEMM): the heads' part of the gradients of ``h_t`` and ``m_{t-1}``;
4. :func:`nru_hidden_backward`: through the ReLU, the gradient of ``xp`` (and of ``rec``);
5. ``g += dxp W_hh`` (GEMM): the recurrent part of the previous state's gradient.

The gradients are those autograd takes through :func:`~revrnn.cells.nru.l5_heads`: the scales
and the floor are detached, ``max(‖w‖, floor)`` splits a tie in half, and the clamps pass the
gradient where the clamp does not act. A row whose ``mask`` is false keeps its state, outputs 0
and passes its gradient through. Arithmetic is in the state dtype (float32, or float64);
constants enter as ``constexpr`` in arithmetic with state-dtype values, so they are exact.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import BLOCK, compute_type, grid, units, valid_rows


@triton.jit
def _hidden_forward(xp, rec, s_old, mask, s_new, y, N, L, H,
                    HAS_MASK: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, L, BLOCK)
    hid = ok & (j < H)
    x = tl.load(xp + b * H + j, mask=hid).to(CT) + tl.load(rec + b * H + j, mask=hid).to(CT)
    h = tl.maximum(x, 0.0)
    old = tl.load(s_old + offs, mask=ok)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    tl.store(s_new + offs, tl.where(hid & valid, h, old), mask=ok)
    tl.store(y + b * H + j, tl.where(valid, h, 0.0).to(y.dtype.element_ty), mask=hid)


@triton.jit
def _hidden_backward(grad, dy, s_new, mask, dxp, N, L, H, HAS_MASK: tl.constexpr, CT: tl.constexpr,
                     BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, H, BLOCK)
    at = b * L + j
    gh = tl.load(grad + at, mask=ok)
    valid = valid_rows(mask, b, ok, HAS_MASK)
    g = gh + tl.where(valid, tl.load(dy + offs, mask=ok).to(CT), 0.0)
    tl.store(dxp + offs, tl.where(valid & (tl.load(s_new + at, mask=ok) > 0), g, 0.0), mask=ok)
    # h_{t-1} reaches h_t only through the GEMM (the backend's); finished rows pass theirs on
    tl.store(grad + at, tl.where(valid, 0.0, gh), mask=ok)


@triton.jit
def _vectors(hrow, KH: tl.constexpr, M: tl.constexpr, R: tl.constexpr, KP: tl.constexpr, MP: tl.constexpr,
             RP: tl.constexpr, RELU: tl.constexpr, TINY: tl.constexpr, EPS: tl.constexpr, CT: tl.constexpr):
    """The write and the erase vectors of one row on a (2·KP, MP) tile: tile row ``side·KP + j``
    is head j of side α (0) or β (1), column c its memory slot. Returns, per element, the
    rescaled product ``v = p̂_{f // r} q̂_{f % r}`` (f = jM + c; before φ) and ``w = φ(v) / a``;
    per tile row ``‖w‖_5``, the floor, the denominator ``D`` (``V = w / D``), ``a``, the gate
    before and after φ and the side; and the tile's flat product index and validity."""
    jj = tl.arange(0, 2 * KP)
    side = jj // KP
    j = jj % KP
    head = j < KH
    c = tl.arange(0, MP)
    ok = head[:, None] & (c[None, :] < M)
    f = j[:, None] * M + c[None, :]
    pq = (2 * KH + 2 * R * side)[:, None]  # where this side's p starts; q follows
    i = tl.arange(0, RP)[None, :]
    sp = tl.maximum(tl.max(tl.abs(tl.load(hrow + pq + i, mask=i < R, other=0.0).to(CT)), 1), TINY)
    sq = tl.maximum(tl.max(tl.abs(tl.load(hrow + pq + R + i, mask=i < R, other=0.0).to(CT)), 1), TINY)
    v = (tl.load(hrow + pq + f // R, mask=ok, other=0.0).to(CT) / sp[:, None]) * \
        (tl.load(hrow + pq + R + f % R, mask=ok, other=0.0).to(CT) / sq[:, None])
    gate_pre = tl.load(hrow + side * KH + j, mask=head, other=0.0).to(CT)
    pv, gate = v, gate_pre
    if RELU:
        pv, gate = tl.maximum(v, 0.0), tl.maximum(gate_pre, 0.0)
    a = tl.where(head, tl.maximum(tl.max(tl.abs(pv), 1), TINY), 1.0)  # 1 on padding: no overflow there
    w = pv / a[:, None]
    s5 = tl.sum(w * w * w * w * tl.abs(w), 1)  # ≤ M: every |w| ≤ 1
    n = tl.where(s5 > 0, tl.exp(tl.log(tl.where(s5 > 0, s5, 1.0)) / 5.0), 0.0)
    floor = EPS / sp / sq / a  # divided in turn, as the reference: 0 or inf only if it must
    d = tl.maximum(tl.maximum(n, floor), TINY)
    return v, w, n, floor, d, a, gate_pre, gate, side, side[:, None] * (KH * M) + f, ok


@triton.jit
def _row_valid(mask, b, c):
    """Row ``b``'s mask flag broadcast over the offsets ``c``: a store mask must be a boolean
    tensor of the offsets' shape (Triton ≥ 3.9's interpreter rejects a scalar combined in)."""
    return tl.load(mask + b + c * 0) != 0


@triton.jit
def _memory_forward(heads, s_old, mask, s_new, L,
                    KH: tl.constexpr, M: tl.constexpr, R: tl.constexpr, KP: tl.constexpr, MP: tl.constexpr,
                    RP: tl.constexpr, RELU: tl.constexpr, HAS_CLAMP: tl.constexpr, CLAMP: tl.constexpr,
                    TINY: tl.constexpr, EPS: tl.constexpr, HAS_MASK: tl.constexpr, CT: tl.constexpr):
    b = tl.program_id(0)
    _, w, _, _, d, _, _, gate, side, _, _ = _vectors(heads + b * (2 * KH + 4 * R), KH, M, R, KP, MP, RP, RELU,
                                                     TINY, EPS, CT)
    coef = tl.where(side == 0, gate, -gate)
    c = tl.arange(0, MP)
    at = b * L + (L - M) + c
    m = tl.load(s_old + at, mask=c < M) + tl.sum(coef[:, None] * (w / d[:, None]), 0) / KH
    if HAS_CLAMP:
        lim = tl.full((), CLAMP, CT)
        m = tl.minimum(tl.maximum(m, -lim), lim)
    keep = c < M
    if HAS_MASK:  # finished rows keep m_{t-1}, which the hidden step copied into s_new
        keep = keep & _row_valid(mask, b, c)
    tl.store(s_new + at, m, mask=keep)


@triton.jit
def _memory_backward(heads, s_old, mask, grad, dheads, dprod, L,
                     KH: tl.constexpr, M: tl.constexpr, R: tl.constexpr, KP: tl.constexpr, MP: tl.constexpr,
                     RP: tl.constexpr, RELU: tl.constexpr, HAS_CLAMP: tl.constexpr, CLAMP: tl.constexpr,
                     TINY: tl.constexpr, EPS: tl.constexpr, HAS_MASK: tl.constexpr, CT: tl.constexpr):
    b = tl.program_id(0)
    G = 2 * KH + 4 * R
    v, w, n, floor, d, a, gate_pre, gate, side, prod, ok = _vectors(heads + b * G, KH, M, R, KP, MP, RP, RELU,
                                                                    TINY, EPS, CT)
    coef = tl.where(side == 0, gate, -gate)
    V = w / d[:, None]
    c = tl.arange(0, MP)
    at = b * L + (L - M) + c
    g = tl.load(grad + at, mask=c < M, other=0.0)
    if HAS_CLAMP:  # zero where the clamp acted (autograd's clamp passes |x| ≤ c inclusive)
        x = tl.load(s_old + at, mask=c < M, other=0.0) + tl.sum(coef[:, None] * V, 0) / KH
        lim = tl.full((), CLAMP, CT)
        g = tl.where((x >= -lim) & (x <= lim), g, 0.0)
    gu = (g / KH)[None, :]  # the mean over heads
    dgate = tl.sum(gu * V, 1)
    dgate = tl.where(side == 0, dgate, -dgate)
    if RELU:
        dgate = tl.where(gate_pre > 0, dgate, 0.0)
    # V = w / max(max(‖w‖_5, floor), TINY), w = φ(v) / a, with the floor and a detached
    dV = coef[:, None] * gu
    dd = -tl.sum(dV * w, 1) / d / d  # not / d², which overflows where the floor is huge
    top = tl.maximum(n, floor)
    dtop = tl.where(top >= TINY, dd, 0.0)
    dn = tl.where(n > floor, dtop, tl.where(n == floor, 0.5 * dtop, 0.0))  # max splits a tie
    n4 = n * n * n * n
    scale = tl.where(n != 0, dn / tl.where(n != 0, n4, 1.0), 0.0)  # ∂‖w‖_5/∂w = w|w|³ / ‖w‖⁴
    dv = (dV / d[:, None] + scale[:, None] * (w * w * w * tl.abs(w))) / a[:, None]
    if RELU:
        dv = tl.where(v > 0, dv, 0.0)
    live = tl.full((), 1, tl.int1)
    keep = c < M
    if HAS_MASK:
        live = tl.load(mask + b) != 0
        keep = keep & _row_valid(mask, b, c)
    jj = tl.arange(0, 2 * KP)
    tl.store(dheads + b * G + (jj // KP) * KH + jj % KP, tl.where(live, dgate, 0.0), mask=jj % KP < KH)
    tl.store(dprod + b * 2 * KH * M + prod, tl.where(live, dv, 0.0), mask=ok)
    tl.store(grad + at, g, mask=keep)


@triton.jit
def _outer_backward(heads, dprod, mask, dheads, KH: tl.constexpr, R: tl.constexpr, RP: tl.constexpr,
                    TINY: tl.constexpr, HAS_MASK: tl.constexpr, CT: tl.constexpr):
    b = tl.program_id(0)
    G = 2 * KH + 4 * R
    side = tl.arange(0, 2)[:, None, None]
    i = tl.arange(0, RP)[None, :, None]  # p's index
    l = tl.arange(0, RP)[None, None, :]  # q's index
    prow = heads + b * G + 2 * KH + 2 * R * side  # where each side's p starts; q follows
    p = tl.load(prow + i, mask=i < R, other=0.0).to(CT)
    q = tl.load(prow + R + l, mask=l < R, other=0.0).to(CT)
    sp = tl.maximum(tl.max(tl.abs(p), 1, keep_dims=True), TINY)
    sq = tl.maximum(tl.max(tl.abs(q), 2, keep_dims=True), TINY)
    dv = tl.load(dprod + (2 * b + side) * R * R + i * R + l, mask=(i < R) & (l < R), other=0.0)
    dp = tl.sum(dv * (q / sq), 2, keep_dims=True) / sp
    dq = tl.sum(dv * (p / sp), 1, keep_dims=True) / sq
    if HAS_MASK:
        live = tl.load(mask + b) != 0
        dp, dq = tl.where(live, dp, 0.0), tl.where(live, dq, 0.0)
    drow = dheads + b * G + 2 * KH + 2 * R * side
    tl.store(drow + i, dp, mask=i < R)
    tl.store(drow + R + l, dq, mask=l < R)


#: the most elements a Triton tensor may have
MAX_TILE = 2 ** 20


def supported(memory_size: int, num_heads: int) -> bool:
    """Whether the kernels can hold a row's tiles, (2k, M) and (2, r, r) padded to powers of two:
    beyond Triton's largest tensor they would not compile. (Large tiles do compile but spill
    registers on a GPU: measured for sm_90 in float32, M = 1024, k = 4 uses 255 registers
    without spilling, M = 4096 spills.)"""
    r = math.isqrt(num_heads * memory_size)
    p2 = triton.next_power_of_2
    return max(2 * p2(num_heads) * p2(memory_size), 2 * p2(r) ** 2) <= MAX_TILE


def _geometry(heads: Tensor, num_heads: int) -> dict:
    """The tile sizes of a heads row of 2k + 4r columns (M = r² / k)."""
    r = (heads.shape[1] - 2 * num_heads) // 4
    M = r * r // num_heads
    return dict(KH=num_heads, M=M, R=r, KP=triton.next_power_of_2(num_heads), MP=triton.next_power_of_2(M),
                RP=triton.next_power_of_2(r))


def _vector_args(state: Tensor, relu: bool, clamp: float | None, eps: float) -> dict:
    return dict(RELU=relu, HAS_CLAMP=clamp is not None, CLAMP=0.0 if clamp is None else float(clamp),
                TINY=torch.finfo(state.dtype).tiny, EPS=eps, CT=compute_type(state))


@torch.library.custom_op("revrnn::nru_hidden_step", mutates_args=("state_out", "y"))
def nru_hidden_step(xp: Tensor, rec: Tensor, state: Tensor, mask: Tensor | None, state_out: Tensor,
                    y: Tensor) -> None:
    """``h_t = ReLU(xp + rec)``: ``xp``, ``rec``, ``y`` (B, H); ``state``, ``state_out`` (B, H + M)
    rows ``[h; m]`` in the state dtype. ``state_out`` receives ``[h_t; m_{t-1}]``, ``y`` the
    output; ``mask`` (B,) uint8 or None."""
    B, L = state.shape
    N = B * L
    _hidden_forward[grid(N)](xp, rec, state, state if mask is None else mask, state_out, y, N, L, xp.shape[1],
                             HAS_MASK=mask is not None, CT=compute_type(state), BLOCK=BLOCK)


@torch.library.custom_op("revrnn::nru_memory_step", mutates_args=("state_out",))
def nru_memory_step(heads: Tensor, state: Tensor, mask: Tensor | None, state_out: Tensor, num_heads: int,
                    relu: bool, clamp: float | None, eps: float) -> None:
    """The memory update from ``heads`` (B, 2k + 4r): the memory columns of ``state_out`` (B, H + M)
    receive ``m_t`` from ``m_{t-1}`` in ``state``; ``eps`` is the L5 normalisation's ε."""
    _memory_forward[(state.shape[0],)](heads, state, state if mask is None else mask, state_out, state.shape[1],
                                       **_geometry(heads, num_heads), **_vector_args(state, relu, clamp, eps),
                                       HAS_MASK=mask is not None)


@torch.library.custom_op("revrnn::nru_memory_backward", mutates_args=("grad", "dheads", "dprod"))
def nru_memory_backward(heads: Tensor, state: Tensor, mask: Tensor | None, grad: Tensor, dheads: Tensor,
                        dprod: Tensor, num_heads: int, relu: bool, clamp: float | None, eps: float) -> None:
    """Backward of :func:`nru_memory_step`: ``state`` is the state before the step; the memory
    columns of ``grad`` (B, H + M) go from the gradient of ``m_t`` to the direct part of
    ``m_{t-1}``'s; ``dheads`` (B, 2k + 4r) receives the gradients of α and β, ``dprod`` (B, 2kM)
    those of the rescaled products of both sides, for :func:`nru_outer_backward`."""
    _memory_backward[(state.shape[0],)](heads, state, state if mask is None else mask, grad, dheads, dprod,
                                        state.shape[1], **_geometry(heads, num_heads),
                                        **_vector_args(state, relu, clamp, eps), HAS_MASK=mask is not None)


@torch.library.custom_op("revrnn::nru_outer_backward", mutates_args=("dheads",))
def nru_outer_backward(heads: Tensor, dprod: Tensor, mask: Tensor | None, dheads: Tensor, num_heads: int) -> None:
    """The p and q columns of ``dheads`` from the products' gradients ``dprod`` (B, 2kM)."""
    geo = _geometry(heads, num_heads)
    _outer_backward[(heads.shape[0],)](heads, dprod, dprod if mask is None else mask, dheads, KH=num_heads,
                                       R=geo["R"], RP=geo["RP"], TINY=torch.finfo(dprod.dtype).tiny,
                                       HAS_MASK=mask is not None, CT=compute_type(dprod))


@torch.library.custom_op("revrnn::nru_hidden_backward", mutates_args=("grad", "dxp"))
def nru_hidden_backward(grad: Tensor, dy: Tensor, state_out: Tensor, mask: Tensor | None, dxp: Tensor) -> None:
    """Backward of :func:`nru_hidden_step`: ``dxp`` (B, H) receives the gradient of ``xp`` (and
    of ``rec``) from the hidden columns of ``grad`` (B, H + M) plus ``dy``, which then hold the
    direct part of ``h_{t-1}``'s gradient; ``state_out`` is the state after the step."""
    B, H = dxp.shape
    N = B * H
    _hidden_backward[grid(N)](grad, dy, state_out, grad if mask is None else mask, dxp, N, grad.shape[1], H,
                              HAS_MASK=mask is not None, CT=compute_type(grad), BLOCK=BLOCK)
