"""What RevGRU and RevLSTM cells share: the two-half layout, the restricted forget gate, and
the parameters of one half-update.

A reversible cell splits its state into halves of G = H/2 units (RevNet coupling): half 1 is
updated from the old half 2, then half 2 from the new half 1. Each half has its own
``weight_ih{j}`` (n·G, I), ``weight_hh{j}`` (n·G, G) and ``bias{j}`` (n·G), where n is the
number of gate blocks, i.e. one ``nn.Linear`` over [x; h_other] per half as in the paper.

A cell defines, for one half:

* ``gates(xp, hb, w_hh)`` — the float gates from the projected input and the other half hb;
* ``advance(own, gates, buf, active)`` — the exact integer update of the half's fixed-point
  state(s), each multiply and its update term one :meth:`RevCellSpec.multiply_add` through the
  information buffer;
* ``retreat(own, gates, buf, active)`` — its exact inverse, undoing the multiplies in reverse;
* ``surrogate(prev, gates, new, active)`` — the differentiable form of the update used by
  ``memory="store"`` (values are the fixed-point ones, gradients those of section 3.2);
* ``backward(gates, hb, prev, new, grad, active)`` — the same gradients written out by hand
  for the reversible pass, which batches the weight-gradient GEMMs over a chunk.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import CellSpec, ParamSpec, Params, check_positive
from . import fixed

Ints = tuple[Tensor, ...]


def check_forget_bits(forget_bits: int) -> int:
    if not isinstance(forget_bits, int) or isinstance(forget_bits, bool) or not 0 <= forget_bits <= fixed.GATE_BITS:
        raise ValueError(f"forget_bits must be an int in [0, {fixed.GATE_BITS}], got {forget_bits!r}")
    return forget_bits


class StraightThrough(torch.autograd.Function):
    """Returns ``value`` and sends the gradient to ``surrogate``: the fixed-point result keeps
    its exact value while autograd differentiates the real-valued update."""

    @staticmethod
    def forward(ctx, surrogate: Tensor, value: Tensor) -> Tensor:
        return value.clone()

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad, None


def where_active(active: Tensor | None, new: Tensor, old: Tensor) -> Tensor:
    return new if active is None else torch.where(active, new, old)


def split_halves(states: tuple[Tensor, ...], G: int) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]]:
    """Views of the two halves of each (batch, 2G) state."""
    return tuple(s[:, :G] for s in states), tuple(s[:, G:] for s in states)


def join_halves(a: tuple[Tensor, ...], b: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return tuple(torch.cat(pair, dim=1) for pair in zip(a, b))


class RevCellSpec(CellSpec):
    """Base of the reversible cells; see the module docstring.

    Args:
        input_size: features of the layer input.
        hidden_size: H, even: the state is two halves of H / 2.
        forget_bits: k; forget gates are restricted to [2**-k, 1] so a multiply stores at most
            k bits. ``0`` is the no-forgetting variant: nothing is multiplied, no buffer is used.
        bias: whether each half has a bias.
    """

    #: gate blocks of one half (rows of weight_ih{j} in units of G)
    blocks: int = 0
    #: exact multiplies of one half-update
    multiplies: int = 0

    def __init__(self, input_size: int, hidden_size: int, forget_bits: int = 3, bias: bool = True) -> None:
        check_positive(input_size=input_size, hidden_size=hidden_size)
        if hidden_size % 2:
            raise ValueError(f"hidden_size must be even (the state is split into two halves), got {hidden_size}")
        super().__init__(input_size, hidden_size)
        self.forget_bits = check_forget_bits(forget_bits)
        self.bias = bias
        self.half = hidden_size // 2
        # k = 0 leaves σ(a) unrestricted where a gate still scales an update term
        self.max_forget = fixed.max_forget(forget_bits)

    def param_specs(self) -> list[ParamSpec]:
        rows = self.blocks * self.half
        specs = []
        for j in (1, 2):
            specs += [ParamSpec(f"weight_ih{j}", (rows, self.input_size)),
                      ParamSpec(f"weight_hh{j}", (rows, self.half))]
            if self.bias:
                specs.append(ParamSpec(f"bias{j}", (rows,)))
        return specs

    def reset_parameters(self, p: Params) -> None:
        """nn.Linear's default over [x; h_other]: U(-1/sqrt(I + G), 1/sqrt(I + G))."""
        bound = 1.0 / math.sqrt(self.input_size + self.half)
        for tensor in p.values():
            torch.nn.init.uniform_(tensor, -bound, bound)

    def half_params(self, p: Params, j: int) -> tuple[Tensor, Tensor, Tensor | None]:
        return p[f"weight_ih{j}"], p[f"weight_hh{j}"], p.get(f"bias{j}")

    def restrict(self, s: Tensor) -> Tensor:
        """The forget-restricted gate m·s + (1 - m)."""
        return s if self.max_forget == 1.0 else self.max_forget * s + (1.0 - self.max_forget)

    def gate_int(self, z: Tensor) -> Tensor:
        return fixed.quantise_gate(z, self.forget_bits)

    def multiply_add(self, h: Tensor, z: Tensor, u: Tensor, buf, active: Tensor | None) -> Tensor:
        """h* <- MUL(h*, z*) + U*: the exact multiply by the gate ``z`` and the update term ``u``,
        one buffer call (one kernel on the Triton buffer); without forgetting only the add."""
        q = self.update_int(u, active)
        return buf.multiply(h, self.gate_int(z), active, q) if self.forget_bits else h + q

    def subtract_divide(self, h: Tensor, z: Tensor, u: Tensor, buf, active: Tensor | None) -> Tensor:
        """The exact inverse of :meth:`multiply_add` with the same gate and update."""
        q = self.update_int(u, active)
        return buf.divide(h, self.gate_int(z), active, q) if self.forget_bits else h - q

    def gate_value(self, z: Tensor) -> Tensor:
        """The factor the state is actually multiplied by: n / 1024 (1 without forgetting)."""
        if not self.forget_bits:
            return torch.ones_like(z)
        return self.gate_int(z).to(z.dtype) / fixed.GATE_ONE

    def straight_gate(self, z: Tensor) -> Tensor:
        """z with the value n / 1024 and the gradient of z (section 3.2 of the spec)."""
        return z + (self.gate_value(z.detach()) - z).detach() if self.forget_bits else torch.ones_like(z)

    @staticmethod
    def update_int(u: Tensor, active: Tensor | None) -> Tensor:
        """The fixed-point update term, zero on masked-off rows."""
        q = fixed.quantise_update(u)
        return q if active is None else q * active

    @staticmethod
    def sigmoid_grad(s: Tensor) -> Tensor:
        return s * (1 - s)
