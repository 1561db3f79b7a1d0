"""Persistent whole-chunk kernels for torch.nn's LSTM and GRU (reset-after), hidden size ≤ 128.

One launch runs all K steps of a chunk. Each program owns ``BLOCK_B`` batch rows and the whole
hidden size, padded to ``BH = max(16, next_pow2(H))``: it loads the recurrent weight once, one
(BH, BH) tile per gate, and keeps it on chip for the whole time loop, so a step reads from
memory only its projected inputs and writes only its outputs. ``h`` and ``c`` stay float32 in
registers across steps; the recurrent product is an in-kernel ``tl.dot`` with operands in the
input dtype (float32 as IEEE, never TF32) accumulating in float32. Padded rows and columns
hold zeros: with zero weights and inputs there, the padded state stays exactly 0.

Backward walks the chunk from its last step to its first in one launch, with ``dh @ W_hh``
in-kernel; the weight gradient is then one GEMM over the chunk in torch.

Residuals (``keep=True``), element dtypes in brackets ("xp" = the projected input's dtype):

* LSTM ``(act, hs, cs)``: ``act`` (K, B, 4H) [xp] the activated gates i, f, g, o;
  ``hs``, ``cs`` (K+1, B, H) [float32] the states before and after every step.
* GRU ``(act, hn, hs)``: ``act`` (K, B, 3H) [xp] the activations r, z, n;
  ``hn`` (K, B, H) [xp] ``W_n h + b_hn``; ``hs`` (K+1, B, H) [float32].

Each launcher is also the ``torch.library`` custom op ``revrnn::persistent_<name>``, opaque to
``torch.compile``. Custom ops cannot return ``None``, so the ops return empty tensors where the
Python launchers return ``None``.
"""
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import interpreting, mask_arg, new, sigmoid, tanh, triton_reason

#: Largest hidden size: the weight tiles must stay on chip next to the state. Even at 128 they
#: may not: the float32 LSTM's four tiles are 256 KiB, an SM's whole register file, so Triton
#: spills part of them (to L1-cached local memory); 16-bit inputs halve that.
MAX_H = 128
#: Batch rows per program; tl.dot needs every dimension ≥ 16.
BLOCK_B = 16
_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}
DTYPES = tuple(_TL)

LSTMResiduals = tuple[Tensor, Tensor, Tensor]
GRUResiduals = tuple[Tensor, Tensor, Tensor]


def supported(H: int) -> bool:
    """Whether these kernels handle hidden size ``H``."""
    return 1 <= H <= MAX_H


def _block_h(H: int) -> int:
    return max(16, triton.next_power_of_2(H))


def _launch(B: int, H: int, dtype: torch.dtype) -> tuple[tuple[int], dict]:
    """Grid and compile-time keywords of a launch. More warps at BH = 128 spread the weight
    tiles (up to 4·128·128 floats) over more registers.

    ``DOT`` is the operand dtype of the in-kernel dots: the input's, except bfloat16 under the
    interpreter, whose tl.dot multiplies bf16 bit patterns as integers (Triton 3.8); there the
    operands are rounded to bf16 and multiplied in float32, which is exact for bf16 products,
    so the result is that of a bf16 dot accumulating in float32.
    """
    BH = _block_h(H)
    dot = tl.float32 if dtype == torch.bfloat16 and interpreting() else _TL[dtype]
    return (triton.cdiv(B, BLOCK_B),), dict(BLOCK_B=BLOCK_B, BH=BH, DOT=dot,
                                            num_warps=8 if BH >= 128 else 4)


def _check(name: str, xp: Tensor, w_hh: Tensor, gates: int) -> tuple[int, int, int]:
    """K, B, H of a chunk; raises unless ``xp`` (or the residual gates) and ``w_hh`` fit
    these kernels."""
    reason = triton_reason(xp.device)
    if reason is not None:
        raise RuntimeError(f"{name}: the Triton kernels cannot run: {reason}")
    if xp.dim() != 3 or xp.shape[2] % gates:
        raise ValueError(f"{name}: xp must be (K, B, {gates}H), got {tuple(xp.shape)}")
    K, B, G = xp.shape
    H = G // gates
    if xp.dtype not in DTYPES:
        raise TypeError(f"{name}: xp must be float32, bfloat16 or float16, got {xp.dtype}")
    if not supported(H):
        raise ValueError(f"{name}: hidden size {H} > {MAX_H}")
    _expect(name, xp.device, w_hh=(w_hh, (G, H)))
    return K, B, H


def _expect(name: str, device: torch.device, **tensors: tuple[Tensor, tuple[int, ...]]) -> None:
    """The kernels index raw memory: raise unless each tensor has its shape, on ``device``."""
    for arg, (t, shape) in tensors.items():
        if tuple(t.shape) != shape or t.device != device:
            raise ValueError(f"{name}: {arg} must be {shape} on {device}, "
                             f"got {tuple(t.shape)} on {t.device}")


def _mask(name: str, mask: Optional[Tensor], like: Tensor, K: int, B: int) -> tuple[Tensor, bool]:
    """The mask as bytes (no i1 pointers in the kernels) and whether there is one."""
    if mask is not None:
        _expect(name, like.device, mask=(mask, (K, B)))
        if mask.dtype != torch.bool:
            raise TypeError(f"{name}: mask must be torch.bool, got {mask.dtype}")
    m, has = mask_arg(mask, like)
    return (m.view(torch.uint8) if has else m), has


def _empty(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _outer(dg: Tensor, hs: Tensor) -> Tensor:
    """``sum_t dg[t]^T hs[t]`` as one float32 GEMM over the chunk: (G, K·B) @ (K·B, H)."""
    K, B, G = dg.shape
    return dg.reshape(K * B, G).t().float() @ hs[:K].reshape(K * B, -1)


# -- shared jit helpers -------------------------------------------------------------------------

@triton.jit
def _w_tile(w_ptr, gate, H, BH: tl.constexpr, DT: tl.constexpr, DOT: tl.constexpr,
            TRANSPOSE: tl.constexpr):
    """Gate ``gate``'s (H, H) block of the (G, H) weight, zero-padded to (BH, BH), rounded to
    ``DT`` and held as ``DOT``; transposed (for ``h @ W^T``) or as stored (for ``dg @ W``)."""
    a = tl.arange(0, BH)
    if TRANSPOSE:
        j, k = a[None, :], a[:, None]
    else:
        j, k = a[:, None], a[None, :]
    w = tl.load(w_ptr + (gate * H + j) * H + k, mask=(j < H) & (k < H), other=0.0)
    return w.to(DT).to(DOT)


@triton.jit
def _bias(b_ptr, gate, H, BH: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Gate ``gate``'s slice of the (G,) bias as a (1, BH) float32 row (zeros if none)."""
    a = tl.arange(0, BH)
    if HAS_BIAS:
        b = tl.load(b_ptr + gate * H + a, mask=a < H, other=0.0).to(tl.float32)
    else:
        b = tl.zeros([BH], dtype=tl.float32)
    return b[None, :]


@triton.jit
def _step_mask(mask_ptr, t, B, rows, HAS_MASK: tl.constexpr):
    """(BLOCK_B, 1) bool: which rows take step ``t`` (all of them without a mask)."""
    if HAS_MASK:
        m = tl.load(mask_ptr + t * B + rows, mask=rows < B, other=0) != 0
    else:
        m = rows >= 0
    return m[:, None]


# -- LSTM ---------------------------------------------------------------------------------------

@triton.jit
def _tile(B, H, BLOCK_B: tl.constexpr, BH: tl.constexpr):
    """This program's batch rows, the padded hidden columns, which (row, column) pairs are in
    range, and their offsets in a (B, H) step."""
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)
    cols = tl.arange(0, BH)
    return rows, cols, (rows[:, None] < B) & (cols[None, :] < H), rows[:, None] * H + cols[None, :]


@triton.jit(do_not_specialize=["K", "B"])
def _lstm_fwd_kernel(xp_ptr, w_ptr, h0_ptr, c0_ptr, mask_ptr, y_ptr, hend_ptr, cend_ptr,
                     act_ptr, hs_ptr, cs_ptr, K, B, H,
                     HAS_MASK: tl.constexpr, KEEP: tl.constexpr,
                     BLOCK_B: tl.constexpr, BH: tl.constexpr, DOT: tl.constexpr):
    DT = xp_ptr.dtype.element_ty
    rows, cols, io, st = _tile(B, H, BLOCK_B, BH)
    gt = rows[:, None] * (4 * H) + cols[None, :]  # gate i's offsets in a (B, 4H) step
    w_i = _w_tile(w_ptr, 0, H, BH, DT, DOT, True)
    w_f = _w_tile(w_ptr, 1, H, BH, DT, DOT, True)
    w_g = _w_tile(w_ptr, 2, H, BH, DT, DOT, True)
    w_o = _w_tile(w_ptr, 3, H, BH, DT, DOT, True)
    h = tl.load(h0_ptr + st, mask=io, other=0.0).to(tl.float32)
    c = tl.load(c0_ptr + st, mask=io, other=0.0).to(tl.float32)
    if KEEP:
        tl.store(hs_ptr + st, h, mask=io)
        tl.store(cs_ptr + st, c, mask=io)
    for t in range(K):
        t64 = tl.cast(t, tl.int64)  # K·B·4H may pass 2^31 on long chunks
        x_t = xp_ptr + t64 * B * 4 * H + gt
        hd = h.to(DT).to(DOT)
        i = sigmoid(tl.dot(hd, w_i, acc=tl.load(x_t, mask=io, other=0.0).to(tl.float32),
                           input_precision="ieee"))
        f = sigmoid(tl.dot(hd, w_f, acc=tl.load(x_t + H, mask=io, other=0.0).to(tl.float32),
                           input_precision="ieee"))
        g = tanh(tl.dot(hd, w_g, acc=tl.load(x_t + 2 * H, mask=io, other=0.0).to(tl.float32),
                        input_precision="ieee"))
        o = sigmoid(tl.dot(hd, w_o, acc=tl.load(x_t + 3 * H, mask=io, other=0.0).to(tl.float32),
                           input_precision="ieee"))
        c_new = f * c + i * g
        h_new = o * tanh(c_new)
        m = _step_mask(mask_ptr, t, B, rows, HAS_MASK)
        c = tl.where(m, c_new, c)
        h = tl.where(m, h_new, h)
        s_t = t64 * B * H + st
        tl.store(y_ptr + s_t, tl.where(m, h_new, 0.0).to(DT), mask=io)
        if KEEP:
            a_t = act_ptr + t64 * B * 4 * H + gt
            tl.store(a_t, i.to(DT), mask=io)
            tl.store(a_t + H, f.to(DT), mask=io)
            tl.store(a_t + 2 * H, g.to(DT), mask=io)
            tl.store(a_t + 3 * H, o.to(DT), mask=io)
            tl.store(hs_ptr + B * H + s_t, h, mask=io)
            tl.store(cs_ptr + B * H + s_t, c, mask=io)
    tl.store(hend_ptr + st, h, mask=io)
    tl.store(cend_ptr + st, c, mask=io)


@triton.jit(do_not_specialize=["K", "B"])
def _lstm_bwd_kernel(act_ptr, cs_ptr, w_ptr, gy_ptr, gh_ptr, gc_ptr, mask_ptr,
                     dxp_ptr, dh0_ptr, dc0_ptr, K, B, H,
                     HAS_MASK: tl.constexpr,
                     BLOCK_B: tl.constexpr, BH: tl.constexpr, DOT: tl.constexpr):
    DT = act_ptr.dtype.element_ty
    rows, cols, io, st = _tile(B, H, BLOCK_B, BH)
    gt = rows[:, None] * (4 * H) + cols[None, :]
    w_i = _w_tile(w_ptr, 0, H, BH, DT, DOT, False)
    w_f = _w_tile(w_ptr, 1, H, BH, DT, DOT, False)
    w_g = _w_tile(w_ptr, 2, H, BH, DT, DOT, False)
    w_o = _w_tile(w_ptr, 3, H, BH, DT, DOT, False)
    dh = tl.load(gh_ptr + st, mask=io, other=0.0).to(tl.float32)
    dc = tl.load(gc_ptr + st, mask=io, other=0.0).to(tl.float32)
    for s in range(K):
        t = K - 1 - s
        t64 = tl.cast(t, tl.int64)
        a_t = act_ptr + t64 * B * 4 * H + gt
        s_t = t64 * B * H + st
        i = tl.load(a_t, mask=io, other=0.0).to(tl.float32)
        f = tl.load(a_t + H, mask=io, other=0.0).to(tl.float32)
        g = tl.load(a_t + 2 * H, mask=io, other=0.0).to(tl.float32)
        o = tl.load(a_t + 3 * H, mask=io, other=0.0).to(tl.float32)
        c_prev = tl.load(cs_ptr + s_t, mask=io, other=0.0)
        tc = tanh(tl.load(cs_ptr + B * H + s_t, mask=io, other=0.0))
        m = _step_mask(mask_ptr, t, B, rows, HAS_MASK)
        # Rows off the mask output 0 and copy their state: no gradient into this step's gates.
        dht = tl.where(m, dh + tl.load(gy_ptr + s_t, mask=io, other=0.0).to(tl.float32), 0.0)
        dct = tl.where(m, dc + dht * o * (1.0 - tc * tc), 0.0)
        di = (dct * g * i * (1.0 - i)).to(DT)
        df = (dct * c_prev * f * (1.0 - f)).to(DT)
        dg = (dct * i * (1.0 - g * g)).to(DT)
        do = (dht * tc * o * (1.0 - o)).to(DT)
        d_t = dxp_ptr + t64 * B * 4 * H + gt
        tl.store(d_t, di, mask=io)
        tl.store(d_t + H, df, mask=io)
        tl.store(d_t + 2 * H, dg, mask=io)
        tl.store(d_t + 3 * H, do, mask=io)
        dh_rec = tl.dot(di.to(DOT), w_i, input_precision="ieee")
        dh_rec = tl.dot(df.to(DOT), w_f, acc=dh_rec, input_precision="ieee")
        dh_rec = tl.dot(dg.to(DOT), w_g, acc=dh_rec, input_precision="ieee")
        dh_rec = tl.dot(do.to(DOT), w_o, acc=dh_rec, input_precision="ieee")
        dh = tl.where(m, dh_rec, dh)
        dc = tl.where(m, dct * f, dc)
    tl.store(dh0_ptr + st, dh, mask=io)
    tl.store(dc0_ptr + st, dc, mask=io)


@torch.library.custom_op("revrnn::persistent_lstm_forward", mutates_args=())
def _lstm_forward_op(xp: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, mask: Optional[Tensor],
                     keep: bool) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    K, B, H = _check("lstm_forward", xp, w_hh, 4)
    _expect("lstm_forward", xp.device, h0=(h0, (B, H)), c0=(c0, (B, H)))
    xp, w_hh, h0, c0 = xp.contiguous(), w_hh.contiguous(), h0.contiguous(), c0.contiguous()
    dev = xp.device
    y = new((K, B, H), xp.dtype, dev)
    h_end, c_end = new((B, H), torch.float32, dev), new((B, H), torch.float32, dev)
    if keep:
        act = new((K, B, 4 * H), xp.dtype, dev)
        hs, cs = new((K + 1, B, H), torch.float32, dev), new((K + 1, B, H), torch.float32, dev)
    else:
        act, hs, cs = _empty(xp), _empty(h_end), _empty(h_end)
    m, has_mask = _mask("lstm_forward", mask, xp, K, B)
    grid, meta = _launch(B, H, xp.dtype)
    _lstm_fwd_kernel[grid](xp, w_hh, h0, c0, m, y, h_end, c_end, act, hs, cs, K, B, H,
                           HAS_MASK=has_mask, KEEP=keep, **meta)
    return y, h_end, c_end, act, hs, cs


@_lstm_forward_op.register_fake
def _(xp, w_hh, h0, c0, mask, keep):
    K, B, G = xp.shape
    H = G // 4
    state = xp.new_empty((B, H), dtype=torch.float32)
    y, c_end = xp.new_empty((K, B, H)), torch.empty_like(state)
    if not keep:
        return y, state, c_end, _empty(xp), _empty(state), _empty(state)
    hs = xp.new_empty((K + 1, B, H), dtype=torch.float32)
    return y, state, c_end, torch.empty_like(xp), hs, torch.empty_like(hs)


def lstm_forward(xp: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, mask: Optional[Tensor],
                 keep: bool) -> tuple[Tensor, Tensor, Tensor, Optional[LSTMResiduals]]:
    """K steps of torch.nn.LSTM from projected inputs ``xp`` (K, B, 4H) (biases folded in).

    Returns ``y`` (K, B, H) in xp's dtype, the float32 end state ``h_end``, ``c_end`` (B, H)
    and, when ``keep``, the residuals ``(act, hs, cs)`` (module docstring). Rows where the
    (K, B) bool ``mask`` is false keep their state and output 0.
    """
    y, h_end, c_end, act, hs, cs = torch.ops.revrnn.persistent_lstm_forward(
        xp, w_hh, h0, c0, mask, keep)
    return y, h_end, c_end, ((act, hs, cs) if keep else None)


@torch.library.custom_op("revrnn::persistent_lstm_backward", mutates_args=())
def _lstm_backward_op(act: Tensor, hs: Tensor, cs: Tensor, w_hh: Tensor, grad_y: Tensor,
                      grad_h: Tensor, grad_c: Tensor, mask: Optional[Tensor], need_w: bool
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    K, B, H = _check("lstm_backward", act, w_hh, 4)
    _expect("lstm_backward", act.device, hs=(hs, (K + 1, B, H)), cs=(cs, (K + 1, B, H)),
            grad_y=(grad_y, (K, B, H)), grad_h=(grad_h, (B, H)), grad_c=(grad_c, (B, H)))
    w_hh, grad_y = w_hh.contiguous(), grad_y.contiguous()
    grad_h, grad_c = grad_h.contiguous(), grad_c.contiguous()
    dev = act.device
    dxp = new((K, B, 4 * H), act.dtype, dev)
    dh0, dc0 = new((B, H), torch.float32, dev), new((B, H), torch.float32, dev)
    m, has_mask = _mask("lstm_backward", mask, act, K, B)
    grid, meta = _launch(B, H, act.dtype)
    _lstm_bwd_kernel[grid](act, cs, w_hh, grad_y, grad_h, grad_c, m, dxp, dh0, dc0, K, B, H,
                           HAS_MASK=has_mask, **meta)
    # gates = xp + h W_hh^T: d(xp) is d(gates), and dW_hh = sum_t d(gates_t)^T h_{t-1}.
    dw = _outer(dxp, hs).to(w_hh.dtype) if need_w else _empty(w_hh)
    return dxp, dh0, dc0, dw


@_lstm_backward_op.register_fake
def _(act, hs, cs, w_hh, grad_y, grad_h, grad_c, mask, need_w):
    B, H = act.shape[1], w_hh.shape[1]
    state = act.new_empty((B, H), dtype=torch.float32)
    return (torch.empty_like(act), state, torch.empty_like(state),
            torch.empty_like(w_hh) if need_w else w_hh.new_empty(0))


def lstm_backward(residuals: LSTMResiduals, w_hh: Tensor, grad_y: Tensor, grad_h: Tensor,
                  grad_c: Tensor, mask: Optional[Tensor], need_w: bool = True
                  ) -> tuple[Tensor, Tensor, Tensor, Optional[Tensor]]:
    """Gradients of an :func:`lstm_forward` chunk from those of its outputs ``grad_y``
    (K, B, H) and end state ``grad_h``, ``grad_c`` (B, H), any float dtypes.

    Returns ``grad_xp`` (K, B, 4H) in the residuals' dtype, float32 ``grad_h0``, ``grad_c0``
    and ``grad_w_hh`` in w_hh's dtype (``None`` unless ``need_w``).
    """
    dxp, dh0, dc0, dw = torch.ops.revrnn.persistent_lstm_backward(
        *residuals, w_hh, grad_y, grad_h, grad_c, mask, need_w)
    return dxp, dh0, dc0, (dw if need_w else None)


# -- GRU ----------------------------------------------------------------------------------------

@triton.jit(do_not_specialize=["K", "B"])
def _gru_fwd_kernel(xp_ptr, w_ptr, b_ptr, h0_ptr, mask_ptr, y_ptr, hend_ptr,
                    act_ptr, hn_ptr, hs_ptr, K, B, H,
                    HAS_BIAS: tl.constexpr, HAS_MASK: tl.constexpr, KEEP: tl.constexpr,
                    BLOCK_B: tl.constexpr, BH: tl.constexpr, DOT: tl.constexpr):
    DT = xp_ptr.dtype.element_ty
    rows, cols, io, st = _tile(B, H, BLOCK_B, BH)
    gt = rows[:, None] * (3 * H) + cols[None, :]
    w_r = _w_tile(w_ptr, 0, H, BH, DT, DOT, True)
    w_z = _w_tile(w_ptr, 1, H, BH, DT, DOT, True)
    w_n = _w_tile(w_ptr, 2, H, BH, DT, DOT, True)
    b_r = _bias(b_ptr, 0, H, BH, HAS_BIAS)
    b_z = _bias(b_ptr, 1, H, BH, HAS_BIAS)
    b_n = _bias(b_ptr, 2, H, BH, HAS_BIAS)
    h = tl.load(h0_ptr + st, mask=io, other=0.0).to(tl.float32)
    if KEEP:
        tl.store(hs_ptr + st, h, mask=io)
    for t in range(K):
        t64 = tl.cast(t, tl.int64)
        x_t = xp_ptr + t64 * B * 3 * H + gt
        hd = h.to(DT).to(DOT)
        r = sigmoid(tl.dot(hd, w_r, acc=tl.load(x_t, mask=io, other=0.0).to(tl.float32) + b_r,
                           input_precision="ieee"))
        z = sigmoid(tl.dot(hd, w_z, acc=tl.load(x_t + H, mask=io, other=0.0).to(tl.float32) + b_z,
                           input_precision="ieee"))
        hn = tl.dot(hd, w_n, input_precision="ieee") + b_n
        n = tanh(tl.load(x_t + 2 * H, mask=io, other=0.0).to(tl.float32) + r * hn)
        h_new = n + z * (h - n)
        m = _step_mask(mask_ptr, t, B, rows, HAS_MASK)
        h = tl.where(m, h_new, h)
        s_t = t64 * B * H + st
        tl.store(y_ptr + s_t, tl.where(m, h_new, 0.0).to(DT), mask=io)
        if KEEP:
            a_t = act_ptr + t64 * B * 3 * H + gt
            tl.store(a_t, r.to(DT), mask=io)
            tl.store(a_t + H, z.to(DT), mask=io)
            tl.store(a_t + 2 * H, n.to(DT), mask=io)
            tl.store(hn_ptr + s_t, hn.to(DT), mask=io)
            tl.store(hs_ptr + B * H + s_t, h, mask=io)
    tl.store(hend_ptr + st, h, mask=io)


@triton.jit(do_not_specialize=["K", "B"])
def _gru_bwd_kernel(act_ptr, hn_ptr, hs_ptr, w_ptr, gy_ptr, gh_ptr, mask_ptr,
                    dxp_ptr, dhn_ptr, dh0_ptr, K, B, H,
                    HAS_MASK: tl.constexpr, NEED_DHN: tl.constexpr,
                    BLOCK_B: tl.constexpr, BH: tl.constexpr, DOT: tl.constexpr):
    DT = act_ptr.dtype.element_ty
    rows, cols, io, st = _tile(B, H, BLOCK_B, BH)
    gt = rows[:, None] * (3 * H) + cols[None, :]
    w_r = _w_tile(w_ptr, 0, H, BH, DT, DOT, False)
    w_z = _w_tile(w_ptr, 1, H, BH, DT, DOT, False)
    w_n = _w_tile(w_ptr, 2, H, BH, DT, DOT, False)
    dh = tl.load(gh_ptr + st, mask=io, other=0.0).to(tl.float32)
    for s in range(K):
        t = K - 1 - s
        t64 = tl.cast(t, tl.int64)
        a_t = act_ptr + t64 * B * 3 * H + gt
        s_t = t64 * B * H + st
        r = tl.load(a_t, mask=io, other=0.0).to(tl.float32)
        z = tl.load(a_t + H, mask=io, other=0.0).to(tl.float32)
        n = tl.load(a_t + 2 * H, mask=io, other=0.0).to(tl.float32)
        hn = tl.load(hn_ptr + s_t, mask=io, other=0.0).to(tl.float32)
        h_prev = tl.load(hs_ptr + s_t, mask=io, other=0.0)
        m = _step_mask(mask_ptr, t, B, rows, HAS_MASK)
        dht = tl.where(m, dh + tl.load(gy_ptr + s_t, mask=io, other=0.0).to(tl.float32), 0.0)
        dn = dht * (1.0 - z) * (1.0 - n * n)  # through tanh: d(xp_n)
        dr = (dn * hn * r * (1.0 - r)).to(DT)
        dz = (dht * (h_prev - n) * z * (1.0 - z)).to(DT)
        dhn = (dn * r).to(DT)  # d(W_n h + b_hn)
        d_t = dxp_ptr + t64 * B * 3 * H + gt
        tl.store(d_t, dr, mask=io)
        tl.store(d_t + H, dz, mask=io)
        tl.store(d_t + 2 * H, dn.to(DT), mask=io)
        if NEED_DHN:
            tl.store(dhn_ptr + s_t, dhn, mask=io)
        dh_rec = tl.dot(dr.to(DOT), w_r, acc=dht * z, input_precision="ieee")
        dh_rec = tl.dot(dz.to(DOT), w_z, acc=dh_rec, input_precision="ieee")
        dh_rec = tl.dot(dhn.to(DOT), w_n, acc=dh_rec, input_precision="ieee")
        dh = tl.where(m, dh_rec, dh)
    tl.store(dh0_ptr + st, dh, mask=io)


@torch.library.custom_op("revrnn::persistent_gru_forward", mutates_args=())
def _gru_forward_op(xp: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], h0: Tensor,
                    mask: Optional[Tensor], keep: bool
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    K, B, H = _check("gru_forward", xp, w_hh, 3)
    _expect("gru_forward", xp.device, h0=(h0, (B, H)),
            **({} if b_hh is None else {"b_hh": (b_hh, (3 * H,))}))
    xp, w_hh, h0 = xp.contiguous(), w_hh.contiguous(), h0.contiguous()
    dev = xp.device
    y, h_end = new((K, B, H), xp.dtype, dev), new((B, H), torch.float32, dev)
    if keep:
        act, hn = new((K, B, 3 * H), xp.dtype, dev), new((K, B, H), xp.dtype, dev)
        hs = new((K + 1, B, H), torch.float32, dev)
    else:
        act, hn, hs = _empty(xp), _empty(xp), _empty(h_end)
    m, has_mask = _mask("gru_forward", mask, xp, K, B)
    grid, meta = _launch(B, H, xp.dtype)
    _gru_fwd_kernel[grid](xp, w_hh, w_hh if b_hh is None else b_hh.contiguous(), h0, m, y,
                          h_end, act, hn, hs, K, B, H, HAS_BIAS=b_hh is not None,
                          HAS_MASK=has_mask, KEEP=keep, **meta)
    return y, h_end, act, hn, hs


@_gru_forward_op.register_fake
def _(xp, w_hh, b_hh, h0, mask, keep):
    K, B, G = xp.shape
    H = G // 3
    y, h_end = xp.new_empty((K, B, H)), xp.new_empty((B, H), dtype=torch.float32)
    if not keep:
        return y, h_end, _empty(xp), _empty(xp), _empty(h_end)
    return (y, h_end, torch.empty_like(xp), torch.empty_like(y),
            xp.new_empty((K + 1, B, H), dtype=torch.float32))


def gru_forward(xp: Tensor, w_hh: Tensor, b_hh: Optional[Tensor], h0: Tensor,
                mask: Optional[Tensor], keep: bool
                ) -> tuple[Tensor, Tensor, Optional[GRUResiduals]]:
    """K steps of torch.nn.GRU from projected inputs ``xp`` (K, B, 3H) (``b_ih`` folded in);
    ``b_hh`` (3H,) or ``None`` (``bias=False``).

    Returns ``y`` (K, B, H) in xp's dtype, the float32 end state ``h_end`` (B, H) and, when
    ``keep``, the residuals ``(act, hn, hs)`` (module docstring).
    """
    y, h_end, act, hn, hs = torch.ops.revrnn.persistent_gru_forward(xp, w_hh, b_hh, h0, mask, keep)
    return y, h_end, ((act, hn, hs) if keep else None)


@torch.library.custom_op("revrnn::persistent_gru_backward", mutates_args=())
def _gru_backward_op(act: Tensor, hn: Tensor, hs: Tensor, w_hh: Tensor, grad_y: Tensor,
                     grad_h: Tensor, mask: Optional[Tensor], need_w: bool, need_b: bool
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    K, B, H = _check("gru_backward", act, w_hh, 3)
    _expect("gru_backward", act.device, hn=(hn, (K, B, H)), hs=(hs, (K + 1, B, H)),
            grad_y=(grad_y, (K, B, H)), grad_h=(grad_h, (B, H)))
    w_hh, grad_y, grad_h = w_hh.contiguous(), grad_y.contiguous(), grad_h.contiguous()
    dev = act.device
    dxp, dh0 = new((K, B, 3 * H), act.dtype, dev), new((B, H), torch.float32, dev)
    need_dhn = need_w or need_b
    dhn = new((K, B, H), act.dtype, dev) if need_dhn else _empty(act)
    m, has_mask = _mask("gru_backward", mask, act, K, B)
    grid, meta = _launch(B, H, act.dtype)
    _gru_bwd_kernel[grid](act, hn, hs, w_hh, grad_y, grad_h, m, dxp, dhn, dh0, K, B, H,
                          HAS_MASK=has_mask, NEED_DHN=need_dhn, **meta)
    # W_hh h + b_hh has gradient [d(xp_r), d(xp_z), dhn]: the r, z rows are shared with xp.
    drz = dxp[..., :2 * H]
    dw = torch.cat([_outer(drz, hs), _outer(dhn, hs)]).to(w_hh.dtype) if need_w else _empty(w_hh)
    db = (torch.cat([drz.sum((0, 1), dtype=torch.float32), dhn.sum((0, 1), dtype=torch.float32)])
          if need_b else _empty(dh0))
    return dxp, dh0, dw, db


@_gru_backward_op.register_fake
def _(act, hn, hs, w_hh, grad_y, grad_h, mask, need_w, need_b):
    B, G = act.shape[1], act.shape[2]
    return (torch.empty_like(act), act.new_empty((B, G // 3), dtype=torch.float32),
            torch.empty_like(w_hh) if need_w else w_hh.new_empty(0),
            act.new_empty((G if need_b else 0,), dtype=torch.float32))


def gru_backward(residuals: GRUResiduals, w_hh: Tensor, b_hh: Optional[Tensor], grad_y: Tensor,
                 grad_h: Tensor, mask: Optional[Tensor], need_w: bool = True, need_b: bool = True
                 ) -> tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
    """Gradients of a :func:`gru_forward` chunk from those of its outputs ``grad_y`` (K, B, H)
    and end state ``grad_h`` (B, H), any float dtypes.

    Returns ``grad_xp`` (K, B, 3H) in the residuals' dtype, float32 ``grad_h0``, ``grad_w_hh``
    in w_hh's dtype (``None`` unless ``need_w``) and ``grad_b_hh`` in b_hh's dtype (``None``
    unless ``need_b`` and there is a ``b_hh``).
    """
    need_b = need_b and b_hh is not None
    dxp, dh0, dw, db = torch.ops.revrnn.persistent_gru_backward(
        *residuals, w_hh, grad_y, grad_h, mask, need_w, need_b)
    return dxp, dh0, (dw if need_w else None), (db.to(b_hh.dtype) if need_b else None)
