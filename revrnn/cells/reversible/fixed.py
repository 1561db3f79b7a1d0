"""The integer core of the reversible cells: fixed-point states and the exactly reversible
multiplication of a state by a quantised gate (Maclaurin et al. 2015, Algorithm "exactly
reversible multiplication by a ratio", as used by MacKay et al. 2018).

Number formats (``specs/reversible.md`` §2.1): a state is an int64 with :data:`HIDDEN_BITS`
fractional bits; a gate z is the integer n = round(z · 2^:data:`GATE_BITS`), so multiplying by
the gate is multiplying by the ratio n / d with d = 1024. The bits that the division by d
discards go into a buffer word, and the multiplication by n moves one base-n digit back out of
it, so each multiply costs log2(d / n) = -log2 z bits of buffer, not log2 d.

Every integer division here either divides a non-negative number or divides by d with an
arithmetic shift, so the result is the floor whether a backend's ``//`` floors (torch) or
truncates toward zero (Triton, CUDA): the two can never disagree.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: fractional bits of a fixed-point state
HIDDEN_BITS = 23
#: fractional bits of a quantised gate; d = 2**GATE_BITS
GATE_BITS = 10
GATE_ONE = 1 << GATE_BITS
GATE_LOW = GATE_ONE - 1
#: states are int64: |value| < 2**(63 - HIDDEN_BITS) = 2**40 is representable
STATE_LIMIT = 2.0 ** (63 - HIDDEN_BITS)
#: initial states must satisfy |value| < 2**32; a step moves a state by at most 1 + 2**-13,
#: so no state can leave the int64 range in fewer than 2**39 steps
INITIAL_LIMIT = 2.0 ** 32
MAX_STEPS = 2 ** 39

_SCALE = float(2 ** HIDDEN_BITS)


def to_fixed(x: Tensor, name: str = "state") -> Tensor:
    """Round a float state to fixed point (int64, :data:`HIDDEN_BITS` fractional bits).

    Raises ``ValueError`` for non-finite values and ``OverflowError`` for |x| >= 2**32, the
    bound under which the int64 format cannot wrap (see :data:`INITIAL_LIMIT`).
    """
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains non-finite values; a reversible state must be finite")
    peak = x.abs().max().item() if x.numel() else 0.0
    if peak >= INITIAL_LIMIT:
        raise OverflowError(f"{name} has |value| = {peak:g} >= 2**32; reversible states are int64 "
                            f"with {HIDDEN_BITS} fractional bits and must start below 2**32 so that "
                            "no step can leave the fixed-point range")
    return torch.round(x.double() * _SCALE).to(torch.int64)


def to_float(h: Tensor, dtype: torch.dtype) -> Tensor:
    """The value of a fixed-point state in ``dtype`` (the scaling by 2**-23 is exact)."""
    return h.to(dtype) * (1.0 / _SCALE)


def quantise_update(u: Tensor) -> Tensor:
    """A float update term in fixed point. |u| <= 1 by construction (products of gates and
    tanh); the clamp guarantees it, so that even a NaN from float overflow cannot wrap a state."""
    return torch.round(torch.nan_to_num(u, nan=0.0).clamp(-1.0, 1.0) * _SCALE).to(torch.int64)


def max_forget(forget_bits: int) -> float:
    """m of the forget restriction z = m·σ + (1 - m): 1 - 2**-k puts z in [2**-k, 1]; k = 0
    (no forgetting, nothing multiplied) leaves σ unrestricted."""
    return 1.0 - 2.0 ** -forget_bits if forget_bits else 1.0


def min_gate(forget_bits: int) -> int:
    """The smallest quantised gate, 2**(10-k): a multiply adds at most k bits to its word."""
    return GATE_ONE >> forget_bits


def quantise_gate(z: Tensor, forget_bits: int) -> Tensor:
    """n = round(1024 z) for a gate z in [2**-k, 1], clamped to [2**(10-k), 1024] so that the
    growth bound of :func:`multiply` holds whatever the float rounding."""
    n = torch.round(z * GATE_ONE).to(torch.int64)
    return n.clamp_(min_gate(forget_bits), GATE_ONE)


def floor_divmod(c: Tensor, n: Tensor) -> tuple[Tensor, Tensor]:
    """(floor(c / n), c mod n) for n > 0 with 0 <= remainder < n, dividing only non-negative
    numbers: c < 0 is written c = -a - 1 with a >= 0, and then floor(c / n) = -(a // n) - 1."""
    neg = c < 0
    a = torch.where(neg, -c - 1, c)
    q = a // n
    r = a - q * n
    return torch.where(neg, -q - 1, q), torch.where(neg, n - 1 - r, r)


def multiply(h: Tensor, n: Tensor, word: Tensor) -> tuple[Tensor, Tensor]:
    """Exactly reversible h · n / 1024 with buffer ``word`` (>= 0); returns (h', word').

    word' < (word + 1) · 1024 / n, so a gate n >= 2**(10-k) adds at most k bits to the word.
    ``word`` must be below 2**53 so that word · 1024 + 1023 fits in int64.
    """
    word = (word << GATE_BITS) | (h & GATE_LOW)   # store the digit the division discards
    h = (h >> GATE_BITS) * n + word % n           # floor(h / d) · n, plus a digit moved back
    return h, word // n


def divide(h: Tensor, n: Tensor, word: Tensor) -> tuple[Tensor, Tensor]:
    """The exact inverse of :func:`multiply`: ``divide(*multiply(h, n, w)) == (h, w)``."""
    q, r = floor_divmod(h, n)
    word = word * n + r
    return q * GATE_ONE + (word & GATE_LOW), word >> GATE_BITS
