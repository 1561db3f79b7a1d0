"""Triton kernels of the reversible cells (:mod:`revrnn.cells.reversible`).

**Integer core.** The exact multiply with its spill (:func:`_multiply`) and the exact divide with
its pop (:func:`_divide`) are ``@triton.jit`` helpers shared by every kernel here. They run the
integer operations of :mod:`revrnn.cells.reversible.fixed` and :class:`~revrnn.cells.reversible.buffer.InformationBuffer`,
so given the same quantised gates and updates they are bit-identical to the torch reference.
Triton's ``//`` and ``%`` truncate toward zero, so, as in :mod:`~revrnn.cells.reversible.fixed`, they
divide only non-negative numbers; ``>>`` on int64 is arithmetic (a floor division by 2**k).

* :func:`multiply` / :func:`divide` (``revrnn::rev_multiply`` / ``rev_divide``): one multiply or
  divide of given int64 gates and updates, for :class:`~revrnn.cells.reversible.buffer.TritonBuffer`.

**Fused half-updates.** The rest take the gate pre-activations of one half-update (the GEMMs run
in torch) and do everything pointwise in one launch: activations, the forget restriction
m·σ + (1 − m), the quantised gate n = rint(1024 z) and update U = rint(2**23 u), spill,
multiply and add (RevLSTM: c, then h with tanh of the new c); in reverse, the same gates,
subtract, divide and pop (h, then c), fused with the pointwise gradients.

* :func:`gru_reset` — r ⊙ h_b, the operand of the candidate GEMM; :func:`gru_reset_backward`;
* :func:`gru_advance`, :func:`lstm_advance` — the forward of a half;
* :func:`gru_retreat`, :func:`lstm_retreat` — undo a half through the buffer and differentiate
  it (the reversible pass);
* :func:`gru_backward`, :func:`lstm_backward` — the same gradients from the stored previous state
  (``memory="store"``): one kernel with the retreat ones, the undo compiled out.

Forward and reverse compute the quantised values with the same helpers (:func:`_gru_gates`,
:func:`_lstm_gates`, :func:`_gate_int`, :func:`_update_int`) from the same pre-activations, so
they agree bit for bit, which exact reversal needs. Their float bits are Triton's σ and tanh,
not torch's, so a fused run differs from ``backend="reference"`` at rounding level (an update
LSB, now and then a gate quantum). Rounding is half to even as ``torch.round``
(:func:`_rint`); the interpreter has no libdevice ``rint``.

Buffer tensors (``word``, ``scratch``, ``height``, ``bits``, ``costs``, ``bad``; see
:meth:`~revrnn.cells.reversible.buffer.TritonBuffer.claim`) are updated in place and are ``None``
without forgetting (``forget_bits=0``: no multiply, no buffer). Each launcher is a
``torch.library`` custom op, opaque to ``torch.compile``.
"""
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from . import common
from .common import sigmoid, tanh, units, valid_rows

# The integer format of specs/reversible.md, written here because kernels/ never imports revrnn;
# tests/test_triton_reversible.py checks that these equal revrnn.cells.reversible's definitions.
HIDDEN_BITS = 23  # fractional bits of a fixed-point state
_GATE_BITS = 10  # a gate n = round(z · 2**10)
_WORD_BITS = 53  # a current buffer word stays below 2**53; its higher bits hold a spill's tag
GATE_BITS: tl.constexpr = tl.constexpr(_GATE_BITS)
GATE_ONE: tl.constexpr = tl.constexpr(1 << _GATE_BITS)
GATE_LOW: tl.constexpr = tl.constexpr((1 << _GATE_BITS) - 1)
WORD_BITS: tl.constexpr = tl.constexpr(_WORD_BITS)
WORD_MASK: tl.constexpr = tl.constexpr((1 << _WORD_BITS) - 1)
SCALE: tl.constexpr = tl.constexpr(float(2 ** HIDDEN_BITS))
UNSCALE: tl.constexpr = tl.constexpr(1.0 / 2 ** HIDDEN_BITS)


# -- the integer core -------------------------------------------------------------------------
@triton.jit
def _multiply(h, n, word, height, live, scratch, offs, numel, depth, tag, spill_at):
    """Spill a full word (push it, tagged, and restart it at 0), then fixed.multiply:
    (h · n / 1024, the new word, the new height); word and height change only where ``live``."""
    spill = live & (word >= spill_at)
    # the slot is clamped like the reference's, though the scratch depth makes that unreachable
    tl.store(scratch + tl.minimum(height, depth - 1) * numel + offs, word | tag, mask=spill)
    word = tl.where(spill, 0, word)
    # the word and the remainder are >= 0, so truncation is the floor
    w = (word << GATE_BITS) | (h & GATE_LOW)
    out = (h >> GATE_BITS) * n + w % n
    return out, tl.where(live, w // n, word), tl.where(spill, height + 1, height)


@triton.jit
def _divide(c, n, word, height, live, scratch, bad, offs, numel, op):
    """fixed.divide of ``c`` (the state less its update) by ``n``, then pop the word spilled
    before multiply ``op`` if the top of the stack carries its tag: (the state before, the word
    before, the new height); word and height change only where ``live``. Sets ``bad`` if a
    popped-over word is not 0: a spilled word restarted at 0, so an exact inverse returns it
    to 0 (every writer stores the same True, so the race is harmless)."""
    # fixed.floor_divmod: c < 0 is divided as ~c = -c - 1 >= 0 (no overflow at the int64 minimum)
    neg = c < 0
    a = tl.where(neg, ~c, c)
    q = a // n
    r = a - q * n
    q = tl.where(neg, ~q, q)
    r = tl.where(neg, n - 1 - r, r)
    w = word * n + r
    out = q * GATE_ONE + (w & GATE_LOW)
    w = w >> GATE_BITS
    top = tl.load(scratch + tl.maximum(height - 1, 0) * numel + offs, mask=live, other=0)
    pop = live & (height > 0) & ((top >> WORD_BITS) == op)
    tl.store(bad + offs * 0, pop, mask=pop & (w != 0))
    w = tl.where(pop, top & WORD_MASK, w)
    return out, tl.where(live, w, word), tl.where(pop, height - 1, height)


# -- quantisation -----------------------------------------------------------------------------
@triton.jit
def _rint(x):
    """Round half to even, as torch.round: below 2**23 (float32; 2**52 for float64) adding that
    power of two leaves no fraction bits, so the FPU's own round-to-nearest-even does it;
    larger values are integers already."""
    if x.dtype == tl.float64:
        big = 4503599627370496.0
    else:
        big = 8388608.0
    a = tl.abs(x)
    r = tl.where(a < big, (a + big) - big, a)
    return tl.where(x < 0, -r, r)


@triton.jit
def _gate_int(z, LOW: tl.constexpr):
    """fixed.quantise_gate: round(1024 z) clamped to [LOW, 1024] = [2**(10-k), 1024]; NaN gives
    LOW as in torch (NaN -> int64 minimum -> clamp)."""
    z = tl.where(z == z, z, 0.0)
    n = _rint(z * GATE_ONE).to(tl.int64)
    return tl.minimum(tl.maximum(n, LOW), GATE_ONE)


@triton.jit
def _update_int(u):
    """fixed.quantise_update: round(2**23 u) of u clamped to [-1, 1], NaN as 0."""
    u = tl.where(u == u, u, 0.0)
    u = tl.minimum(tl.maximum(u, -1.0), 1.0)
    return _rint(u * SCALE).to(tl.int64)


@triton.jit
def _restrict(s, M: tl.constexpr, K: tl.constexpr):
    """The forget restriction m·s + (1 - m) (k = 0: s itself)."""
    z = s
    if K > 0:
        z = M * s + (1.0 - M)
    return z


@triton.jit
def _keep(n, CT: tl.constexpr, K: tl.constexpr):
    """The factor a state is multiplied by, n / 1024 (1 without forgetting): its gradient."""
    if K > 0:
        keep = n.to(CT) / GATE_ONE
    else:
        keep = tl.full(n.shape, 1.0, CT)
    return keep


@triton.jit
def _account(bits, costs, offs, ok, live, n):
    """Add the information cost -log2(n / 1024) of a multiply to each live element, read from
    the table ``costs`` (torch's float64 log2, as the reference buffer's accounting)."""
    cost = tl.load(costs + n, mask=live, other=0.0)
    tl.store(bits + offs, tl.load(bits + offs, mask=ok) + cost, mask=ok)


# -- gates --------------------------------------------------------------------------------------
@triton.jit
def _gru_gates(pre_zr, pre_g, b, j, G, ok, M: tl.constexpr, K: tl.constexpr, CT: tl.constexpr):
    """(σ(a_z), the restricted z, tanh(a_g)) of unit j in row b."""
    s = sigmoid(tl.load(pre_zr + b * 2 * G + j, mask=ok).to(CT))
    g = tanh(tl.load(pre_g + b * G + j, mask=ok).to(CT))
    return s, _restrict(s, M, K), g


@triton.jit
def _lstm_gates(pre, b, j, G, ok, M: tl.constexpr, K: tl.constexpr, CT: tl.constexpr):
    """(σ(a_f), f, tanh(a_g), σ(a_i), σ(a_o), σ(a_p), p): blocks [f, g, i, o, p], f and p restricted."""
    row = b * 5 * G + j
    sf = sigmoid(tl.load(pre + row, mask=ok).to(CT))
    g = tanh(tl.load(pre + row + G, mask=ok).to(CT))
    i = sigmoid(tl.load(pre + row + 2 * G, mask=ok).to(CT))
    o = sigmoid(tl.load(pre + row + 3 * G, mask=ok).to(CT))
    sp = sigmoid(tl.load(pre + row + 4 * G, mask=ok).to(CT))
    return sf, _restrict(sf, M, K), g, i, o, sp, _restrict(sp, M, K)


@triton.jit
def _float(h, CT: tl.constexpr):
    """fixed.to_float (the scaling by 2**-23 is exact)."""
    return h.to(CT) * UNSCALE


# -- kernels ------------------------------------------------------------------------------------
@triton.jit
def _multiply_kernel(h_ptr, n_ptr, u_ptr, act_ptr, word_ptr, scratch_ptr, height_ptr, h_out, word_out,
                     numel, cols, depth, tag, spill_at,
                     HAS_UPDATE: tl.constexpr, HAS_ACTIVE: tl.constexpr, BLOCK: tl.constexpr):
    offs, inb, rows, _ = units(numel, cols, BLOCK)
    live = valid_rows(act_ptr, rows, inb, HAS_ACTIVE)
    h = tl.load(h_ptr + offs, mask=inb, other=0)
    n = tl.load(n_ptr + offs, mask=inb, other=GATE_ONE)
    height = tl.load(height_ptr + offs, mask=inb, other=0)
    out, word, height = _multiply(h, n, tl.load(word_ptr + offs, mask=inb, other=0), height, live,
                                  scratch_ptr, offs, numel, depth, tag, spill_at)
    if HAS_UPDATE:
        out += tl.load(u_ptr + offs, mask=inb, other=0)
    tl.store(height_ptr + offs, height, mask=inb)
    tl.store(h_out + offs, tl.where(live, out, h), mask=inb)
    tl.store(word_out + offs, word, mask=inb)


@triton.jit
def _divide_kernel(h_ptr, n_ptr, u_ptr, act_ptr, word_ptr, scratch_ptr, height_ptr, bad_ptr, h_out, word_out,
                   numel, cols, op,
                   HAS_UPDATE: tl.constexpr, HAS_ACTIVE: tl.constexpr, BLOCK: tl.constexpr):
    offs, inb, rows, _ = units(numel, cols, BLOCK)
    live = valid_rows(act_ptr, rows, inb, HAS_ACTIVE)
    h = tl.load(h_ptr + offs, mask=inb, other=0)
    n = tl.load(n_ptr + offs, mask=inb, other=GATE_ONE)
    c = h
    if HAS_UPDATE:
        c -= tl.load(u_ptr + offs, mask=inb, other=0)
    out, word, height = _divide(c, n, tl.load(word_ptr + offs, mask=inb, other=0),
                                tl.load(height_ptr + offs, mask=inb, other=0), live,
                                scratch_ptr, bad_ptr, offs, numel, op)
    tl.store(height_ptr + offs, height, mask=inb)
    tl.store(h_out + offs, tl.where(live, out, h), mask=inb)
    tl.store(word_out + offs, word, mask=inb)


@triton.jit
def _gru_reset_kernel(pre_zr, hb, ld_hb, rh, N, G, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, G, BLOCK)
    r = sigmoid(tl.load(pre_zr + b * 2 * G + G + j, mask=ok).to(CT))
    tl.store(rh + offs, r * tl.load(hb + b * ld_hb + j, mask=ok).to(CT), mask=ok)


@triton.jit
def _gru_reset_back_kernel(pre_zr, hb, ld_hb, drh, da, dhb, N, G, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, G, BLOCK)
    r = sigmoid(tl.load(pre_zr + b * 2 * G + G + j, mask=ok).to(CT))
    d = tl.load(drh + offs, mask=ok).to(CT)
    tl.store(da + b * 3 * G + G + j, d * tl.load(hb + b * ld_hb + j, mask=ok).to(CT) * (r * (1 - r)), mask=ok)
    tl.store(dhb + offs, d * r, mask=ok)


@triton.jit
def _gru_advance_kernel(pre_zr, pre_g, h, ld_h, active, word, scratch, height, bits, costs, h_out, f_out,
                        N, G, depth, tag, spill_at, HAS_ACTIVE: tl.constexpr, K: tl.constexpr, M: tl.constexpr,
                        LOW: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, G, BLOCK)
    live = valid_rows(active, b, ok, HAS_ACTIVE)
    s, z, g = _gru_gates(pre_zr, pre_g, b, j, G, ok, M, K, CT)
    h0 = tl.load(h + b * ld_h + j, mask=ok)
    h1 = h0
    if K > 0:
        n = _gate_int(z, LOW)
        h1, w, ht = _multiply(h0, n, tl.load(word + offs, mask=ok), tl.load(height + offs, mask=ok), live,
                              scratch, offs, N, depth, tag, spill_at)
        tl.store(word + offs, w, mask=ok)
        tl.store(height + offs, ht, mask=ok)
        _account(bits, costs, offs, ok, live, n)
    h1 = tl.where(live, h1 + _update_int((1 - z) * g), h0)
    tl.store(h_out + offs, h1, mask=ok)
    tl.store(f_out + offs, _float(h1, CT), mask=ok)


@triton.jit
def _gru_back_kernel(pre_zr, pre_g, h, ld_h, prev, ld_prev, active, word, scratch, height, bad, dh, ld_dh,
                     prev_out, f_out, da, dprev, N, G, op, RETREAT: tl.constexpr, HAS_ACTIVE: tl.constexpr,
                     K: tl.constexpr, M: tl.constexpr, LOW: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, G, BLOCK)
    live = valid_rows(active, b, ok, HAS_ACTIVE)
    s, z, g = _gru_gates(pre_zr, pre_g, b, j, G, ok, M, K, CT)
    n = _gate_int(z, LOW)
    if RETREAT:
        h1 = tl.load(h + b * ld_h + j, mask=ok)
        h0 = h1 - _update_int((1 - z) * g)
        if K > 0:
            h0, w, ht = _divide(h0, n, tl.load(word + offs, mask=ok), tl.load(height + offs, mask=ok), live,
                                scratch, bad, offs, N, op)
            tl.store(word + offs, w, mask=ok)
            tl.store(height + offs, ht, mask=ok)
        h0 = tl.where(live, h0, h1)
        tl.store(prev_out + offs, h0, mask=ok)
        hp = _float(h0, CT)
        tl.store(f_out + offs, hp, mask=ok)
    else:
        hp = _float(tl.load(prev + b * ld_prev + j, mask=ok), CT)
    # RevGRUCell.backward
    gh = tl.load(dh + b * ld_dh + j, mask=ok).to(CT)
    if K > 0:
        dz = gh * (hp - g)
    else:
        dz = -gh * g
    zero = tl.zeros_like(gh)
    tl.store(da + b * 3 * G + j, tl.where(live, dz * (M * (s * (1 - s))), zero), mask=ok)
    tl.store(da + b * 3 * G + G + j, zero, mask=ok)  # the reset block: gru_reset_backward's
    tl.store(da + b * 3 * G + 2 * G + j, tl.where(live, gh * (1 - z) * (1 - g * g), zero), mask=ok)
    tl.store(dprev + offs, tl.where(live, gh * _keep(n, CT, K), gh), mask=ok)


@triton.jit
def _lstm_advance_kernel(pre, h, ld_h, c, ld_c, active, word, scratch, height, bits, costs, h_out, c_out, f_out,
                         N, G, depth, tag_c, tag_h, spill_at, HAS_ACTIVE: tl.constexpr, K: tl.constexpr,
                         M: tl.constexpr, LOW: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, G, BLOCK)
    live = valid_rows(active, b, ok, HAS_ACTIVE)
    sf, f, g, i, o, sp, p = _lstm_gates(pre, b, j, G, ok, M, K, CT)
    h0 = tl.load(h + b * ld_h + j, mask=ok)
    c0 = tl.load(c + b * ld_c + j, mask=ok)
    h1, c1 = h0, c0
    if K > 0:  # c's multiply, then h's: the update terms are added after both
        nf, np_ = _gate_int(f, LOW), _gate_int(p, LOW)
        w, ht = tl.load(word + offs, mask=ok), tl.load(height + offs, mask=ok)
        c1, w, ht = _multiply(c0, nf, w, ht, live, scratch, offs, N, depth, tag_c, spill_at)
        h1, w, ht = _multiply(h0, np_, w, ht, live, scratch, offs, N, depth, tag_h, spill_at)
        tl.store(word + offs, w, mask=ok)
        tl.store(height + offs, ht, mask=ok)
        _account(bits, costs, offs, ok, live, nf)
        _account(bits, costs, offs, ok, live, np_)
    c1 = tl.where(live, c1 + _update_int(i * g), c0)
    h1 = tl.where(live, h1 + _update_int(o * tanh(_float(c1, CT))), h0)
    tl.store(h_out + offs, h1, mask=ok)
    tl.store(c_out + offs, c1, mask=ok)
    tl.store(f_out + offs, _float(h1, CT), mask=ok)


@triton.jit
def _lstm_back_kernel(pre, h, ld_h, c, ld_c, prev_h, ld_ph, prev_c, ld_pc, active, word, scratch, height, bad,
                      dh, ld_dh, dc, ld_dc, h_out, c_out, f_out, da, dh_out, dc_out, N, G, op,
                      RETREAT: tl.constexpr, HAS_ACTIVE: tl.constexpr, K: tl.constexpr, M: tl.constexpr,
                      LOW: tl.constexpr, CT: tl.constexpr, BLOCK: tl.constexpr):
    offs, ok, b, j = units(N, G, BLOCK)
    live = valid_rows(active, b, ok, HAS_ACTIVE)
    sf, f, g, i, o, sp, p = _lstm_gates(pre, b, j, G, ok, M, K, CT)
    nf, np_ = _gate_int(f, LOW), _gate_int(p, LOW)
    c1 = tl.load(c + b * ld_c + j, mask=ok)
    tc = tanh(_float(c1, CT))
    if RETREAT:  # undo h (multiply op + 1), then c (multiply op)
        h1 = tl.load(h + b * ld_h + j, mask=ok)
        h0 = h1 - _update_int(o * tc)
        c0 = c1 - _update_int(i * g)
        if K > 0:
            w, ht = tl.load(word + offs, mask=ok), tl.load(height + offs, mask=ok)
            h0, w, ht = _divide(h0, np_, w, ht, live, scratch, bad, offs, N, op + 1)
            c0, w, ht = _divide(c0, nf, w, ht, live, scratch, bad, offs, N, op)
            tl.store(word + offs, w, mask=ok)
            tl.store(height + offs, ht, mask=ok)
        h0, c0 = tl.where(live, h0, h1), tl.where(live, c0, c1)
        tl.store(h_out + offs, h0, mask=ok)
        tl.store(c_out + offs, c0, mask=ok)
        hp = _float(h0, CT)
        tl.store(f_out + offs, hp, mask=ok)
    else:
        h0, c0 = tl.load(prev_h + b * ld_ph + j, mask=ok), tl.load(prev_c + b * ld_pc + j, mask=ok)
        hp = _float(h0, CT)
    # RevLSTMCell.backward
    gh = tl.load(dh + b * ld_dh + j, mask=ok).to(CT)
    gc = tl.load(dc + b * ld_dc + j, mask=ok).to(CT)
    dct = gc + gh * o * (1 - tc * tc)
    zero = tl.zeros_like(gh)
    row = b * 5 * G + j
    if K > 0:
        tl.store(da + row, tl.where(live, dct * _float(c0, CT) * M * (sf * (1 - sf)), zero), mask=ok)
        tl.store(da + row + 4 * G, tl.where(live, gh * hp * M * (sp * (1 - sp)), zero), mask=ok)
    else:
        tl.store(da + row, zero, mask=ok)
        tl.store(da + row + 4 * G, zero, mask=ok)
    tl.store(da + row + G, tl.where(live, dct * i * (1 - g * g), zero), mask=ok)
    tl.store(da + row + 2 * G, tl.where(live, dct * g * (i * (1 - i)), zero), mask=ok)
    tl.store(da + row + 3 * G, tl.where(live, gh * tc * (o * (1 - o)), zero), mask=ok)
    tl.store(dh_out + offs, tl.where(live, gh * _keep(np_, CT, K), gh), mask=ok)
    tl.store(dc_out + offs, tl.where(live, dct * _keep(nf, CT, K), gc), mask=ok)


# -- launchers ----------------------------------------------------------------------------------
def _operands(h: Tensor, n: Tensor, update: Optional[Tensor], active: Optional[Tensor]):
    """Contiguous h, n and update, the row mask (one flag per row of h) and its row length."""
    h, n = h.contiguous(), n.expand(h.shape).contiguous()
    u, has_update = common.mask_arg(None if update is None else update.expand(h.shape), h)
    act, has_active = _active(active, h.shape[0])
    return h, n, u, act if has_active else h, has_update, has_active, h.numel() // max(h.shape[0], 1)


def _active(active: Optional[Tensor], rows: int) -> tuple[Optional[Tensor], bool]:
    if active is not None and active.numel() != rows:
        raise ValueError(f"active must hold one flag per row ({rows}), got shape {tuple(active.shape)}")
    return (None, False) if active is None else (active.reshape(-1).contiguous(), True)


def _outputs(h: Tensor, word: Tensor) -> tuple[Tensor, Tensor]:
    return common.new(h.shape, h.dtype, h.device), common.new(word.shape, word.dtype, word.device)


@torch.library.custom_op("revrnn::rev_multiply", mutates_args=("scratch", "height"))
def multiply(h: Tensor, n: Tensor, update: Optional[Tensor], active: Optional[Tensor], word: Tensor,
             scratch: Tensor, height: Tensor, op: int, spill_at: int) -> tuple[Tensor, Tensor]:
    """One buffered multiply of int64 states ``h`` (rows x units) by gates ``n`` (in 1..1024):
    returns (h · n / 1024 + update, new word), spilling first where ``word >= spill_at``.

    ``scratch`` (depth, *h.shape) and ``height`` (h.shape) are the chunk's contiguous stacks,
    updated in place; ``op`` is the multiply's index in the chunk (the spill tag). ``update``
    (int64, optional) is added after the multiply; rows where the (rows, 1) bool ``active`` is
    false are returned unchanged and neither multiply nor spill.
    """
    h, n, u, act, has_update, has_active, cols = _operands(h, n, update, active)
    h_out, word_out = _outputs(h, word)
    _multiply_kernel[common.grid(h.numel())](
        h, n, u, act, word, scratch, height, h_out, word_out, h.numel(), cols, scratch.shape[0],
        op << _WORD_BITS, spill_at, HAS_UPDATE=has_update, HAS_ACTIVE=has_active, BLOCK=common.BLOCK)
    return h_out, word_out


@multiply.register_fake
def _(h, n, update, active, word, scratch, height, op, spill_at):
    return torch.empty_like(h, memory_format=torch.contiguous_format), torch.empty_like(word)


@torch.library.custom_op("revrnn::rev_divide", mutates_args=("height", "bad"))
def divide(h: Tensor, n: Tensor, update: Optional[Tensor], active: Optional[Tensor], word: Tensor,
           scratch: Tensor, height: Tensor, bad: Tensor, op: int) -> tuple[Tensor, Tensor]:
    """The inverse of :func:`multiply` with the same ``n``, ``update``, ``active`` and ``op``:
    returns (the state before it, the word before it), popping from ``scratch`` where the top
    of an element's stack is tagged ``op`` (``height`` is updated in place). The bool scalar
    ``bad`` is set if a popped-over word is not 0, i.e. the reverse was not exact.
    """
    h, n, u, act, has_update, has_active, cols = _operands(h, n, update, active)
    h_out, word_out = _outputs(h, word)
    _divide_kernel[common.grid(h.numel())](
        h, n, u, act, word, scratch, height, bad, h_out, word_out, h.numel(), cols, op,
        HAS_UPDATE=has_update, HAS_ACTIVE=has_active, BLOCK=common.BLOCK)
    return h_out, word_out


@divide.register_fake
def _(h, n, update, active, word, scratch, height, bad, op):
    return torch.empty_like(h, memory_format=torch.contiguous_format), torch.empty_like(word)


# -- fused half-update launchers ---------------------------------------------------------------
def _rows(t: Optional[Tensor], like: Tensor) -> tuple[Tensor, int]:
    """A (rows, units) operand addressed as ``b * ld + j`` and its row stride ``ld``: the half of
    a joined state is such a view, so it is not copied (``like`` stands in for None)."""
    if t is None:
        return like, 0
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        t = t.contiguous()
    return t, t.stride(0)


def _pre(pre: Tensor, name: str, blocks: int, G: int) -> Tensor:
    if pre.dim() != 2 or pre.shape[1] != blocks * G:
        raise ValueError(f"{name} must be (batch, {blocks} * {G}) pre-activations, got shape {tuple(pre.shape)}")
    return pre.contiguous()


def _gates(forget_bits: int, like: Tensor) -> dict:
    """The compile-time gate arguments: k, the restriction m and the gate floor, and the type."""
    # m = 1 - 2**-k restricts z to [2**-k, 1] (k = 0: unrestricted); the gate floor is 2**(10-k)
    return dict(K=forget_bits, M=1.0 - 2.0 ** -forget_bits if forget_bits else 1.0, LOW=(1 << _GATE_BITS) >> forget_bits,
                CT=common.compute_type(like), BLOCK=common.BLOCK)


def _stand_in(t: Optional[Tensor], like: Tensor) -> Tensor:
    return like if t is None else t


@torch.library.custom_op("revrnn::rev_gru_reset", mutates_args=())
def gru_reset(pre_zr: Tensor, hb: Tensor) -> Tensor:
    """r ⊙ h_b with r = σ of the reset block of ``pre_zr`` (batch, 2G): the operand of the
    candidate GEMM, (batch, G) in h_b's dtype."""
    B, G = hb.shape
    pre_zr, (hb, ld) = _pre(pre_zr, "pre_zr", 2, G), _rows(hb, hb)
    rh = common.new((B, G), hb.dtype, hb.device)
    _gru_reset_kernel[common.grid(B * G)](pre_zr, hb, ld, rh, B * G, G, CT=common.compute_type(hb),
                                          BLOCK=common.BLOCK)
    return rh


@gru_reset.register_fake
def _(pre_zr, hb):
    return hb.new_empty(hb.shape)


@torch.library.custom_op("revrnn::rev_gru_reset_backward", mutates_args=("da",))
def gru_reset_backward(pre_zr: Tensor, hb: Tensor, drh: Tensor, da: Tensor) -> Tensor:
    """The gradient through :func:`gru_reset` of ``drh`` (the gradient of r ⊙ h_b): writes the
    reset block of ``da`` (batch, 3G) and returns drh ⊙ r, its part of the gradient of h_b."""
    B, G = hb.shape
    pre_zr, (hb, ld) = _pre(pre_zr, "pre_zr", 2, G), _rows(hb, hb)
    dhb = common.new((B, G), hb.dtype, hb.device)
    _gru_reset_back_kernel[common.grid(B * G)](pre_zr, hb, ld, drh.contiguous(), da, dhb, B * G, G,
                                               CT=common.compute_type(hb), BLOCK=common.BLOCK)
    return dhb


@gru_reset_backward.register_fake
def _(pre_zr, hb, drh, da):
    return hb.new_empty(hb.shape)


@torch.library.custom_op("revrnn::rev_gru_advance", mutates_args=("word", "scratch", "height", "bits"))
def gru_advance(pre_zr: Tensor, pre_g: Tensor, h: Tensor, active: Optional[Tensor], word: Optional[Tensor],
                scratch: Optional[Tensor], height: Optional[Tensor], bits: Optional[Tensor], costs: Optional[Tensor],
                op: int, spill_at: int, forget_bits: int) -> tuple[Tensor, Tensor]:
    """The forward of a RevGRU half from its pre-activations ``pre_zr`` (batch, 2G: [z, r]) and
    ``pre_g`` (batch, G): h* <- MUL(h*, n) + U with n = rint(1024 z), U = rint(2**23 (1 - z) g),
    as multiply ``op`` of the chunk. Returns (the new int64 state, its float value in the
    gates' dtype). ``word``, ``scratch``, ``height`` and the float64 information cost ``bits``
    are the buffer's, updated in place; ``costs`` is the table 10 - log2(n) for n in 0..1024.
    All five are ``None`` at ``forget_bits=0`` (h* <- h* + U)."""
    B, G = h.shape
    pre_zr, pre_g, (h, ld) = _pre(pre_zr, "pre_zr", 2, G), _pre(pre_g, "pre_g", 1, G), _rows(h, h)
    act, has_active = _active(active, B)
    h_out, f_out = common.new((B, G), h.dtype, h.device), common.new((B, G), pre_g.dtype, h.device)
    _gru_advance_kernel[common.grid(B * G)](
        pre_zr, pre_g, h, ld, _stand_in(act, h), *(_stand_in(t, h) for t in (word, scratch, height, bits, costs)),
        h_out, f_out, B * G, G, 1 if scratch is None else scratch.shape[0], op << _WORD_BITS, spill_at,
        HAS_ACTIVE=has_active, **_gates(forget_bits, pre_g))
    return h_out, f_out


@gru_advance.register_fake
def _(pre_zr, pre_g, h, active, word, scratch, height, bits, costs, op, spill_at, forget_bits):
    return h.new_empty(h.shape), pre_g.new_empty(h.shape)


def _gru_back(pre_zr: Tensor, pre_g: Tensor, h: Optional[Tensor], prev: Optional[Tensor],
              active: Optional[Tensor], word: Optional[Tensor], scratch: Optional[Tensor],
              height: Optional[Tensor], bad: Optional[Tensor], dh: Tensor, op: int, forget_bits: int):
    """:func:`gru_retreat` (``h`` given) or :func:`gru_backward` (``prev`` given): one kernel."""
    B, G = dh.shape
    pre_zr, pre_g = _pre(pre_zr, "pre_zr", 2, G), _pre(pre_g, "pre_g", 1, G)
    retreat = h is not None
    (h, ld_h), (prev, ld_prev), (dh, ld_dh) = _rows(h, dh), _rows(prev, dh), _rows(dh, dh)
    act, has_active = _active(active, B)
    da, dprev = common.new((B, 3 * G), dh.dtype, dh.device), common.new((B, G), dh.dtype, dh.device)
    h_out = common.new((B, G), torch.int64, dh.device) if retreat else None
    f_out = common.new((B, G), pre_g.dtype, dh.device) if retreat else None
    _gru_back_kernel[common.grid(B * G)](
        pre_zr, pre_g, h, ld_h, prev, ld_prev, _stand_in(act, dh),
        *(_stand_in(t, dh) for t in (word, scratch, height, bad)), dh, ld_dh,
        _stand_in(h_out, da), _stand_in(f_out, da), da, dprev, B * G, G, op,
        RETREAT=retreat, HAS_ACTIVE=has_active, **_gates(forget_bits, pre_g))
    return h_out, f_out, da, dprev


@torch.library.custom_op("revrnn::rev_gru_retreat", mutates_args=("word", "scratch", "height", "bad"))
def gru_retreat(pre_zr: Tensor, pre_g: Tensor, h: Tensor, dh: Tensor, active: Optional[Tensor],
                word: Optional[Tensor], scratch: Optional[Tensor], height: Optional[Tensor], bad: Optional[Tensor],
                op: int, forget_bits: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Undo :func:`gru_advance` (same pre-activations, ``active``, ``op``) and differentiate it
    given ``dh``, the gradient of the new state: returns (the previous int64 state, its float
    value, the pre-activation gradient (batch, 3G) whose r block is 0 until
    :func:`gru_reset_backward` writes it, the gradient of the previous state). The buffer pops in place;
    ``bad`` is set if the reverse was not exact."""
    return _gru_back(pre_zr, pre_g, h, None, active, word, scratch, height, bad, dh, op, forget_bits)


@gru_retreat.register_fake
def _(pre_zr, pre_g, h, dh, active, word, scratch, height, bad, op, forget_bits):
    B, G = h.shape
    return h.new_empty(h.shape), pre_g.new_empty(h.shape), dh.new_empty((B, 3 * G)), dh.new_empty(h.shape)


@torch.library.custom_op("revrnn::rev_gru_backward", mutates_args=())
def gru_backward(pre_zr: Tensor, pre_g: Tensor, prev: Tensor, dh: Tensor, active: Optional[Tensor],
                 forget_bits: int) -> tuple[Tensor, Tensor]:
    """The gradients of :func:`gru_retreat` from the stored previous int64 state ``prev``
    (``memory="store"``): (the pre-activation gradient, the gradient of the previous state)."""
    return _gru_back(pre_zr, pre_g, None, prev, active, None, None, None, None, dh, 0, forget_bits)[2:]


@gru_backward.register_fake
def _(pre_zr, pre_g, prev, dh, active, forget_bits):
    B, G = dh.shape
    return dh.new_empty((B, 3 * G)), dh.new_empty(dh.shape)


@torch.library.custom_op("revrnn::rev_lstm_advance", mutates_args=("word", "scratch", "height", "bits"))
def lstm_advance(pre: Tensor, h: Tensor, c: Tensor, active: Optional[Tensor], word: Optional[Tensor],
                 scratch: Optional[Tensor], height: Optional[Tensor], bits: Optional[Tensor], costs: Optional[Tensor],
                 op: int, spill_at: int, forget_bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """The forward of a RevLSTM half from its pre-activations ``pre`` (batch, 5G: [f, g, i, o, p]):
    c* <- MUL(c*, f*) + rint(2**23 i g) as multiply ``op``, then h* <- MUL(h*, p*) +
    rint(2**23 o tanh(c)) with the new c as multiply ``op + 1``. Returns (new h*, new c*, the
    float value of h) ; the buffer as in :func:`gru_advance`."""
    B, G = h.shape
    pre, (h, ld_h), (c, ld_c) = _pre(pre, "pre", 5, G), _rows(h, h), _rows(c, c)
    act, has_active = _active(active, B)
    h_out, c_out = common.new((B, G), h.dtype, h.device), common.new((B, G), c.dtype, h.device)
    f_out = common.new((B, G), pre.dtype, h.device)
    _lstm_advance_kernel[common.grid(B * G)](
        pre, h, ld_h, c, ld_c, _stand_in(act, h), *(_stand_in(t, h) for t in (word, scratch, height, bits, costs)),
        h_out, c_out, f_out, B * G, G, 1 if scratch is None else scratch.shape[0], op << _WORD_BITS,
        (op + 1) << _WORD_BITS, spill_at, HAS_ACTIVE=has_active, **_gates(forget_bits, pre))
    return h_out, c_out, f_out


@lstm_advance.register_fake
def _(pre, h, c, active, word, scratch, height, bits, costs, op, spill_at, forget_bits):
    return h.new_empty(h.shape), c.new_empty(h.shape), pre.new_empty(h.shape)


def _lstm_back(pre: Tensor, h: Optional[Tensor], c: Tensor, prev_h: Optional[Tensor], prev_c: Optional[Tensor],
               active: Optional[Tensor], word: Optional[Tensor], scratch: Optional[Tensor],
               height: Optional[Tensor], bad: Optional[Tensor], dh: Tensor, dc: Tensor, op: int, forget_bits: int):
    """:func:`lstm_retreat` (``h`` given) or :func:`lstm_backward` (``prev_h``, ``prev_c``)."""
    B, G = dh.shape
    pre = _pre(pre, "pre", 5, G)
    retreat = h is not None
    (h, ld_h), (c, ld_c), (dh, ld_dh), (dc, ld_dc) = _rows(h, c), _rows(c, c), _rows(dh, dh), _rows(dc, dc)
    (prev_h, ld_ph), (prev_c, ld_pc) = _rows(prev_h, c), _rows(prev_c, c)
    act, has_active = _active(active, B)
    da = common.new((B, 5 * G), dh.dtype, dh.device)
    dh_out, dc_out = common.new((B, G), dh.dtype, dh.device), common.new((B, G), dh.dtype, dh.device)
    outs = [common.new((B, G), t, dh.device) for t in (torch.int64, torch.int64, pre.dtype)] if retreat else [None] * 3
    _lstm_back_kernel[common.grid(B * G)](
        pre, h, ld_h, c, ld_c, prev_h, ld_ph, prev_c, ld_pc, _stand_in(act, c),
        *(_stand_in(t, c) for t in (word, scratch, height, bad)), dh, ld_dh, dc, ld_dc,
        *(_stand_in(t, da) for t in outs), da, dh_out, dc_out, B * G, G, op,
        RETREAT=retreat, HAS_ACTIVE=has_active, **_gates(forget_bits, pre))
    return (*outs, da, dh_out, dc_out)


@torch.library.custom_op("revrnn::rev_lstm_retreat", mutates_args=("word", "scratch", "height", "bad"))
def lstm_retreat(pre: Tensor, h: Tensor, c: Tensor, dh: Tensor, dc: Tensor, active: Optional[Tensor],
                 word: Optional[Tensor], scratch: Optional[Tensor], height: Optional[Tensor], bad: Optional[Tensor],
                 op: int, forget_bits: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Undo :func:`lstm_advance` (h, then c) and differentiate it given ``dh``, ``dc``: returns
    (previous h*, previous c*, the float value of the previous h, the pre-activation gradient
    (batch, 5G), the gradients of the previous h and c); the buffer as in :func:`gru_retreat`."""
    return _lstm_back(pre, h, c, None, None, active, word, scratch, height, bad, dh, dc, op, forget_bits)


@lstm_retreat.register_fake
def _(pre, h, c, dh, dc, active, word, scratch, height, bad, op, forget_bits):
    B, G = h.shape
    return (h.new_empty(h.shape), c.new_empty(h.shape), pre.new_empty(h.shape), dh.new_empty((B, 5 * G)),
            dh.new_empty(h.shape), dh.new_empty(h.shape))


@torch.library.custom_op("revrnn::rev_lstm_backward", mutates_args=())
def lstm_backward(pre: Tensor, prev_h: Tensor, prev_c: Tensor, c: Tensor, dh: Tensor, dc: Tensor,
                  active: Optional[Tensor], forget_bits: int) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients of :func:`lstm_retreat` from the stored previous int64 states and the new
    c* (``memory="store"``): (the pre-activation gradient, the gradients of the previous h and c)."""
    return _lstm_back(pre, None, c, prev_h, prev_c, active, None, None, None, None, dh, dc, 0, forget_bits)[3:]


@lstm_backward.register_fake
def _(pre, prev_h, prev_c, c, dh, dc, active, forget_bits):
    B, G = dh.shape
    return dh.new_empty((B, 5 * G)), dh.new_empty(dh.shape), dh.new_empty(dh.shape)
