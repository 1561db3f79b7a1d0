"""Triton kernels for the integer core of the reversible cells: one launch per exact multiply
(or its inverse) of a half state, fusing what :class:`revrnn.reversible.buffer.InformationBuffer`
does in several torch ops.

* :func:`multiply` — spill full buffer words onto their element's stack, the exact multiply
  h · n / 1024 of :func:`revrnn.reversible.fixed.multiply`, then add the update term;
* :func:`divide` — subtract the update term, the exact inverse of
  :func:`revrnn.reversible.fixed.divide`, then pop the word spilled before that multiply.

Both are bit-identical to the torch reference given the same quantised gates and updates
(int64 tensors, quantised in torch), because they run the same integer operations. Triton's
``//`` and ``%`` truncate toward zero, so, as in :mod:`~revrnn.reversible.fixed`, the kernels
divide only non-negative numbers; ``>>`` on int64 is arithmetic (a floor division by 2**k).

Each launcher is a ``torch.library`` custom op (``revrnn::rev_multiply``,
``revrnn::rev_divide``), opaque to ``torch.compile``.
"""
from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor

from revrnn.reversible import buffer, fixed

from . import common

GATE_BITS: tl.constexpr = tl.constexpr(fixed.GATE_BITS)
GATE_ONE: tl.constexpr = tl.constexpr(fixed.GATE_ONE)
GATE_LOW: tl.constexpr = tl.constexpr(fixed.GATE_LOW)
WORD_BITS: tl.constexpr = tl.constexpr(buffer.WORD_BITS)
WORD_MASK: tl.constexpr = tl.constexpr(buffer.WORD_MASK)


@triton.jit
def _live(act_ptr, offs, inb, cols, HAS_ACTIVE: tl.constexpr):
    """Elements that take part: in bounds and, with a row mask, in an active row."""
    if HAS_ACTIVE:
        return inb & tl.load(act_ptr + offs // cols, mask=inb, other=0)
    return inb


@triton.jit
def _multiply_kernel(h_ptr, n_ptr, u_ptr, act_ptr, word_ptr, scratch_ptr, height_ptr, h_out, word_out,
                     numel, cols, depth, tag, spill_at,
                     HAS_UPDATE: tl.constexpr, HAS_ACTIVE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < numel
    live = _live(act_ptr, offs, inb, cols, HAS_ACTIVE)
    h = tl.load(h_ptr + offs, mask=inb, other=0)
    n = tl.load(n_ptr + offs, mask=inb, other=GATE_ONE)
    word = tl.load(word_ptr + offs, mask=inb, other=0)
    height = tl.load(height_ptr + offs, mask=inb, other=0)
    # spill a full word: push it, tagged with the op index, and restart the word at 0; the slot
    # is clamped like the reference's, though the scratch depth makes that unreachable
    spill = live & (word >= spill_at)
    slot = tl.minimum(height, depth - 1)
    tl.store(scratch_ptr + slot * numel + offs, word | tag, mask=spill)
    tl.store(height_ptr + offs, height + 1, mask=spill)
    word = tl.where(spill, 0, word)
    # fixed.multiply: the word and the remainder are >= 0, so truncation is the floor
    w = (word << GATE_BITS) | (h & GATE_LOW)
    out = (h >> GATE_BITS) * n + w % n
    w = w // n
    if HAS_UPDATE:
        out += tl.load(u_ptr + offs, mask=inb, other=0)
    tl.store(h_out + offs, tl.where(live, out, h), mask=inb)
    tl.store(word_out + offs, tl.where(live, w, word), mask=inb)


@triton.jit
def _divide_kernel(h_ptr, n_ptr, u_ptr, act_ptr, word_ptr, scratch_ptr, height_ptr, bad_ptr, h_out, word_out,
                   numel, cols, op,
                   HAS_UPDATE: tl.constexpr, HAS_ACTIVE: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inb = offs < numel
    live = _live(act_ptr, offs, inb, cols, HAS_ACTIVE)
    h = tl.load(h_ptr + offs, mask=inb, other=0)
    n = tl.load(n_ptr + offs, mask=inb, other=GATE_ONE)
    word = tl.load(word_ptr + offs, mask=inb, other=0)
    height = tl.load(height_ptr + offs, mask=inb, other=0)
    c = h
    if HAS_UPDATE:
        c -= tl.load(u_ptr + offs, mask=inb, other=0)
    # fixed.floor_divmod: c < 0 is divided as ~c = -c - 1 >= 0 (no overflow at the int64 minimum)
    neg = c < 0
    a = tl.where(neg, ~c, c)
    q = a // n
    r = a - q * n
    q = tl.where(neg, ~q, q)
    r = tl.where(neg, n - 1 - r, r)
    # fixed.divide
    w = word * n + r
    out = q * GATE_ONE + (w & GATE_LOW)
    w = w >> GATE_BITS
    # pop the word this multiply spilled, if the top of the stack carries its tag
    top = tl.load(scratch_ptr + tl.maximum(height - 1, 0) * numel + offs, mask=inb, other=0)
    pop = live & (height > 0) & ((top >> WORD_BITS) == op)
    # a spilled word restarted at 0, so the inverse must bring it back to 0: else flag it (every
    # writer stores the same True, so the race is harmless)
    tl.store(bad_ptr + offs * 0, pop, mask=pop & (w != 0))
    tl.store(height_ptr + offs, height - 1, mask=pop)
    w = tl.where(pop, top & WORD_MASK, w)
    tl.store(h_out + offs, tl.where(live, out, h), mask=inb)
    tl.store(word_out + offs, tl.where(live, w, word), mask=inb)


def _operands(h: Tensor, n: Tensor, update: Optional[Tensor], active: Optional[Tensor]):
    """Contiguous h, n and update, the row mask (one flag per row of h) and its row length."""
    h, n = h.contiguous(), n.expand(h.shape).contiguous()
    u, has_update = common.mask_arg(None if update is None else update.expand(h.shape), h)
    if active is not None and active.numel() != h.shape[0]:
        raise ValueError(f"active must hold one flag per row ({h.shape[0]}), got shape {tuple(active.shape)}")
    act, has_active = common.mask_arg(None if active is None else active.reshape(-1), h)
    return h, n, u, act, has_update, has_active, h.numel() // max(h.shape[0], 1)


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
        op << buffer.WORD_BITS, spill_at, HAS_UPDATE=has_update, HAS_ACTIVE=has_active, BLOCK=common.BLOCK)
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
