"""RevLSTM (MacKay et al. 2018, spec ``reversible.md`` §1.2): one half-update

    [f; g; i; o; p] = W x + U h_b + b   (σ, tanh, σ, σ, σ; f and p restricted to [2**-k, 1])
    c_a = f ⊙ c_a + i ⊙ g               (exact: c_a* <- MUL(c_a*, f*) + U*)
    h_a = p ⊙ h_a + o ⊙ tanh(c_a)       (the h-forget gate p; uses the new c_a)

Each half state is (h, c); the multiplies run c then h, so the reverse undoes h then c.
With ``forget_bits=0`` nothing is multiplied (f = p = 1), and the f and p rows are unused.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import Ints, RevCellSpec, StraightThrough, where_active
from .fixed import to_float


class LSTMGates(NamedTuple):
    sf: Tensor  # σ of the c-forget pre-activation
    f: Tensor   # restricted c-forget gate
    g: Tensor   # candidate
    i: Tensor   # input gate
    o: Tensor   # output gate
    sp: Tensor  # σ of the h-forget pre-activation
    p: Tensor   # restricted h-forget gate


class RevLSTMCell(RevCellSpec):
    name = "revlstm"
    blocks = 5
    multiplies = 2

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size, self.hidden_size)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("hx", "cx")

    def gates(self, xp: Tensor, hb: Tensor, w_hh: Tensor) -> LSTMGates:
        G = self.half
        a = xp + hb.contiguous().matmul(w_hh.t())
        sf, _, i, o, sp = torch.sigmoid(a).chunk(5, dim=1)
        g = torch.tanh(a[:, G:2 * G])
        return LSTMGates(sf, self.restrict(sf), g, i, o, sp, self.restrict(sp))

    def advance(self, own: Ints, gt: LSTMGates, buf, active: Tensor | None) -> Ints:
        h, c = own
        c = self.multiply_add(c, gt.f, gt.i * gt.g, buf, active)
        tc = torch.tanh(to_float(c, gt.o.dtype))
        h = self.multiply_add(h, gt.p, gt.o * tc, buf, active)
        return h, c

    def retreat(self, own: Ints, gt: LSTMGates, buf, active: Tensor | None) -> Ints:
        h, c = own
        tc = torch.tanh(to_float(c, gt.o.dtype))
        h = self.subtract_divide(h, gt.p, gt.o * tc, buf, active)
        c = self.subtract_divide(c, gt.f, gt.i * gt.g, buf, active)
        return h, c

    def surrogate(self, prev: tuple[Tensor, ...], gt: LSTMGates, new: Ints,
                  active: Tensor | None) -> tuple[Tensor, ...]:
        h, c = prev
        c_new = StraightThrough.apply(self.straight_gate(gt.f) * c + gt.i * gt.g, to_float(new[1], c.dtype))
        h_new = self.straight_gate(gt.p) * h + gt.o * torch.tanh(c_new)
        h_new = StraightThrough.apply(h_new, to_float(new[0], h.dtype))
        return where_active(active, h_new, h), where_active(active, c_new, c)

    def backward(self, gt: LSTMGates, hb: Tensor, w_hh: Tensor, prev: tuple[Tensor, ...],
                 new: tuple[Tensor, ...], grad: tuple[Tensor, ...], active: Tensor | None):
        """As :meth:`RevGRUCell.backward`; states and gradients are (h, c) pairs."""
        (h, c), (dh, dc) = prev, grad
        tc = torch.tanh(new[1])
        dct = dc + dh * gt.o * (1 - tc * tc)
        m = self.max_forget
        dp, df = (dh * h, dct * c) if self.forget_bits else (torch.zeros_like(dh), torch.zeros_like(dc))
        da = torch.cat([df * m * self.sigmoid_grad(gt.sf), dct * gt.i * (1 - gt.g * gt.g),
                        dct * gt.g * self.sigmoid_grad(gt.i), dh * tc * self.sigmoid_grad(gt.o),
                        dp * m * self.sigmoid_grad(gt.sp)], dim=1)
        if active is not None:
            da = da * active
        dprev = (where_active(active, dh * self.gate_value(gt.p), dh),
                 where_active(active, dct * self.gate_value(gt.f), dc))
        return dprev, da.matmul(w_hh), da, (hb,)

    def grad_weight_hh(self, da: Tensor, operands: tuple[Tensor, ...]) -> Tensor:
        return da.t().matmul(operands[0])
