"""RevGRU (MacKay et al. 2018, spec ``reversible.md`` §1.1): one half-update

    [s; r] = σ(W_zr x + U_zr h_b + b_zr),   z = m·s + (1 - m)
    g      = tanh(W_g x + U_g (r ⊙ h_b) + b_g)
    h_a    = z ⊙ h_a + (1 - z) ⊙ g          (exact: h_a* <- MUL(h_a*, z*) + U*)

with gate blocks [z, r, g] in ``weight_ih{j}`` / ``weight_hh{j}``. With ``forget_bits=0`` the
state is not multiplied (h_a <- h_a + (1 - σ) ⊙ g): the no-forgetting RevGRU.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .base import Ints, RevCellSpec, StraightThrough, where_active
from .fixed import to_float


class GRUGates(NamedTuple):
    s: Tensor   # σ of the update pre-activation
    z: Tensor   # restricted update gate
    r: Tensor   # reset gate
    rh: Tensor  # r ⊙ h_b, the operand of U_g
    g: Tensor   # candidate


class RevGRUCell(RevCellSpec):
    name = "revgru"
    blocks = 3
    multiplies = 1

    def gates(self, xp: Tensor, hb: Tensor, w_hh: Tensor) -> GRUGates:
        G = self.half
        hb = hb.contiguous()
        s, r = torch.sigmoid(xp[:, :2 * G] + hb.matmul(w_hh[:2 * G].t())).chunk(2, dim=1)
        rh = r * hb
        g = torch.tanh(xp[:, 2 * G:] + rh.matmul(w_hh[2 * G:].t()))
        return GRUGates(s, self.restrict(s), r, rh, g)

    def advance(self, own: Ints, gt: GRUGates, buf, active: Tensor | None) -> Ints:
        return (self.multiply_add(own[0], gt.z, (1 - gt.z) * gt.g, buf, active),)

    def retreat(self, own: Ints, gt: GRUGates, buf, active: Tensor | None) -> Ints:
        return (self.subtract_divide(own[0], gt.z, (1 - gt.z) * gt.g, buf, active),)

    def surrogate(self, prev: tuple[Tensor, ...], gt: GRUGates, new: Ints,
                  active: Tensor | None) -> tuple[Tensor, ...]:
        h = self.straight_gate(gt.z) * prev[0] + (1 - gt.z) * gt.g
        h = StraightThrough.apply(h, to_float(new[0], h.dtype))
        return (where_active(active, h, prev[0]),)

    def backward(self, gt: GRUGates, hb: Tensor, w_hh: Tensor, prev: tuple[Tensor, ...],
                 new: tuple[Tensor, ...], grad: tuple[Tensor, ...], active: Tensor | None):
        """Gradients of one half-update from the float states before (``prev``) and after
        (``new``) and the gradient ``grad`` of the new state: (grad of prev, grad of h_b, grad
        of the projected input, operands of the weight_hh rows for :meth:`grad_weight_hh`)."""
        G = self.half
        (dh,) = grad
        dz = dh * (prev[0] - gt.g) if self.forget_bits else -dh * gt.g
        da_g = dh * (1 - gt.z) * (1 - gt.g * gt.g)
        da_z = dz * (self.max_forget * self.sigmoid_grad(gt.s))
        if active is not None:
            da_g, da_z = da_g * active, da_z * active
        drh = da_g.matmul(w_hh[2 * G:])
        da = torch.cat([da_z, drh * hb * self.sigmoid_grad(gt.r), da_g], dim=1)
        dhb = drh * gt.r + da[:, :2 * G].matmul(w_hh[:2 * G])
        dprev = where_active(active, dh * self.gate_value(gt.z), dh)
        return (dprev,), dhb, da, (hb, gt.rh)

    def grad_weight_hh(self, da: Tensor, operands: tuple[Tensor, ...]) -> Tensor:
        """Gradient of weight_hh from the pre-activation gradients ``da`` (M, 3G) and the
        operands returned by :meth:`backward`, stacked over M rows."""
        G = self.half
        hb, rh = operands
        return torch.cat([da[:, :2 * G].t().matmul(hb), da[:, 2 * G:].t().matmul(rh)])
