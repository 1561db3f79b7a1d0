"""The half-updates of RevGRU and RevLSTM on the Triton path (``backend="triton"``): the GEMMs
in torch, everything pointwise in the fused kernels of :mod:`revrnn.kernels.reversible`, one
launch per half-update for the forward and one for the reverse with its pointwise gradients.

Launches per half-update (k = ``forget_bits``; the same for k = 0, which has no buffer):

=================  ============================================  =========================
                   RevGRU                                        RevLSTM
=================  ============================================  =========================
forward            addmm [z, r]; gru_reset; addmm g; gru_advance  addmm; lstm_advance
reverse + grads    addmm [z, r]; gru_reset; addmm g; gru_retreat;  addmm; lstm_retreat; mm
                   mm; gru_reset_backward; addmm
=================  ============================================  =========================

plus, in the reversible pass, the two adds of the other half's gradient, and the weight
gradients, batched per chunk by :class:`~revrnn.cells.reversible.function.Reversible`.

``memory="store"`` runs the same forward (same calls, so the same bits) inside
:class:`StoreStep`, an autograd Function that keeps the pre-activations and states and
differentiates with the same gradient kernels, reading the previous state instead of undoing
the update. Both modes therefore give identical outputs and gradients up to the order of the
weight-gradient sums.

The gates are Triton's σ and tanh, whose bits differ from torch's: outputs differ from
``backend="reference"`` at rounding level (see :mod:`revrnn.kernels.reversible`), while forward
and reverse agree bit for bit.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ...kernels import reversible as K
from . import fixed
from .base import Ints, RevCellSpec, join_halves, split_halves
from .buffer import TritonBuffer
from .function import Halves
from .revgru import RevGRUCell
from .revlstm import RevLSTMCell


def _claim(buf: TritonBuffer | None, ops: int) -> tuple:
    return (None,) * 5 + (0, 0) if buf is None else buf.claim(ops)


def _unclaim(buf: TritonBuffer | None, ops: int) -> tuple:
    return (None,) * 4 + (0,) if buf is None else buf.unclaim(ops)


class FusedHalf(Halves):
    """The fused half-update of one cell: what a cell spec's ``gates``, ``advance``, ``retreat``
    and ``backward`` do, with the pointwise work in Triton kernels.

    A half-update reads the pre-activations :meth:`preacts` of the projected input ``xp`` and
    the float value ``hb`` of the other half, and its own fixed-point state(s) ``own``.
    """

    buffer = TritonBuffer

    def __init__(self, cell: RevCellSpec) -> None:
        self.cell = cell
        self.k = cell.forget_bits

    def refusal(self, cell: RevCellSpec) -> str | None:
        return None

    def preacts(self, xp: Tensor, hb: Tensor, w_hh: Tensor) -> tuple[Tensor, ...]:
        """The gate pre-activations (and, for RevGRU, r ⊙ h_b). ``hb`` is a view of a joined
        state in one pass and a kernel's output in the other, and a GEMM's bits can depend on
        its operand's layout: it is made contiguous so that both passes give the same bits."""
        raise NotImplementedError

    def advance(self, pre: tuple[Tensor, ...], own: Ints, buf: TritonBuffer | None,
                active: Tensor | None) -> tuple[Ints, Tensor]:
        """The exact update: (new states, float value of the new h)."""
        raise NotImplementedError

    def retreat(self, pre: tuple[Tensor, ...], own: Ints, grad: tuple[Tensor, ...], buf: TritonBuffer | None,
                active: Tensor | None) -> tuple[Ints, Tensor, tuple[Tensor, ...], Tensor]:
        """Undo :meth:`advance` and differentiate it given the gradients ``grad`` of the new states:
        (previous states, float value of the previous h, their gradients, pre-activation gradient)."""
        raise NotImplementedError

    def backward(self, pre: tuple[Tensor, ...], prev: Ints, new: Ints, grad: tuple[Tensor, ...],
                 active: Tensor | None) -> tuple[tuple[Tensor, ...], Tensor]:
        """The gradients of :meth:`retreat` from the stored states: (of ``prev``, of the pre-activations)."""
        raise NotImplementedError

    def grad_hb(self, pre: tuple[Tensor, ...], hb: Tensor, w_hh: Tensor, da: Tensor) -> Tensor:
        """The gradient of the other half from the pre-activation gradient ``da`` (complete on return)."""
        raise NotImplementedError

    def operands(self, pre: tuple[Tensor, ...], hb: Tensor) -> tuple[Tensor, ...]:
        """What the cell's ``grad_weight_hh`` multiplies ``da`` with."""
        raise NotImplementedError

    def forward(self, xp: Tensor, hb: Tensor, w_hh: Tensor, own: Ints, buf: TritonBuffer | None,
                active: Tensor | None) -> tuple[tuple[Tensor, ...], Ints, Tensor]:
        """:meth:`preacts` then :meth:`advance`: (pre-activations, new states, float new h)."""
        pre = self.preacts(xp, hb, w_hh)
        return (pre, *self.advance(pre, own, buf, active))

    # -- one step of a layer: half 1 from the old h2, then half 2 from the new h1 ------------------
    def step(self, p: dict[str, Tensor], xp: tuple[Tensor, Tensor], own: Ints, sur: tuple[Tensor, ...] | None,
             h: Tensor, buf: TritonBuffer | None, active: Tensor | None):
        """As :func:`revrnn.cells.reversible.function._step`: (new states, new surrogates or None, float new h);
        ``h`` is the float value of ``own[0]``."""
        G = self.cell.half
        own1, own2 = split_halves(own, G)
        if sur is None:
            _, own1, f1 = self.forward(xp[0], h[:, G:], p["weight_hh1"], own1, buf, active)
            _, own2, f2 = self.forward(xp[1], f1, p["weight_hh2"], own2, buf, active)
            return join_halves(own1, own2), None, torch.cat([f1, f2], dim=1)
        n = len(own)
        sur1, sur2 = split_halves(sur, G)
        out = StoreStep.apply(self, buf, active, xp[0], sur2[0], p["weight_hh1"], *own1, *sur1)
        sur1, own1 = out[:n], out[n:]
        out = StoreStep.apply(self, buf, active, xp[1], sur1[0], p["weight_hh2"], *own2, *sur2)
        sur2, own2 = out[:n], out[n:]
        sur = join_halves(sur1, sur2)
        return join_halves(own1, own2), sur, sur[0]

    def step_back(self, p: dict[str, Tensor], xp: tuple[Tensor, Tensor], own: Ints, grad: tuple[Tensor, ...],
                  h: Tensor, buf: TritonBuffer | None, active: Tensor | None):
        """As :func:`revrnn.cells.reversible.function._step_back`, plus the float value of the previous h."""
        G = self.cell.half
        own1, own2 = split_halves(own, G)
        d1, d2 = split_halves(grad, G)
        w1, w2 = p["weight_hh1"], p["weight_hh2"]
        hb = h[:, :G]
        pre = self.preacts(xp[1], hb, w2)
        prev2, f2, d2, da2 = self.retreat(pre, own2, d2, buf, active)
        d1 = (d1[0] + self.grad_hb(pre, hb, w2, da2), *d1[1:])
        ops2 = self.operands(pre, hb)
        pre = self.preacts(xp[0], f2, w1)
        prev1, f1, d1, da1 = self.retreat(pre, own1, d1, buf, active)
        d2 = (d2[0] + self.grad_hb(pre, f2, w1, da1), *d2[1:])
        return (join_halves(prev1, prev2), join_halves(d1, d2), (da1, self.operands(pre, f2)), (da2, ops2),
                torch.cat([f1, f2], dim=1))


class GRUHalf(FusedHalf):
    def preacts(self, xp: Tensor, hb: Tensor, w_hh: Tensor) -> tuple[Tensor, ...]:
        G, hb = self.cell.half, hb.contiguous()
        pre_zr = torch.addmm(xp[:, :2 * G], hb, w_hh[:2 * G].t())
        rh = K.gru_reset(pre_zr, hb)
        return pre_zr, torch.addmm(xp[:, 2 * G:], rh, w_hh[2 * G:].t()), rh

    def advance(self, pre, own, buf, active):
        h, f = K.gru_advance(pre[0], pre[1], own[0], active, *_claim(buf, 1), self.k)
        return (h,), f

    def retreat(self, pre, own, grad, buf, active):
        h, f, da, dh = K.gru_retreat(pre[0], pre[1], own[0], grad[0], active, *_unclaim(buf, 1), self.k)
        return (h,), f, (dh,), da

    def backward(self, pre, prev, new, grad, active):
        da, dh = K.gru_backward(pre[0], pre[1], prev[0], grad[0], active, self.k)
        return (dh,), da

    def grad_hb(self, pre, hb, w_hh, da):
        G = self.cell.half
        drh = da[:, 2 * G:].matmul(w_hh[2 * G:])
        return torch.addmm(K.gru_reset_backward(pre[0], hb, drh, da), da[:, :2 * G], w_hh[:2 * G])

    def operands(self, pre, hb):
        return hb, pre[2]


class LSTMHalf(FusedHalf):
    def preacts(self, xp: Tensor, hb: Tensor, w_hh: Tensor) -> tuple[Tensor, ...]:
        return (torch.addmm(xp, hb.contiguous(), w_hh.t()),)

    def advance(self, pre, own, buf, active):
        h, c, f = K.lstm_advance(pre[0], own[0], own[1], active, *_claim(buf, 2), self.k)
        return (h, c), f

    def retreat(self, pre, own, grad, buf, active):
        h, c, f, da, dh, dc = K.lstm_retreat(pre[0], own[0], own[1], grad[0], grad[1], active,
                                             *_unclaim(buf, 2), self.k)
        return (h, c), f, (dh, dc), da

    def backward(self, pre, prev, new, grad, active):
        da, dh, dc = K.lstm_backward(pre[0], prev[0], prev[1], new[1], grad[0], grad[1], active, self.k)
        return (dh, dc), da

    def grad_hb(self, pre, hb, w_hh, da):
        return da.matmul(w_hh)

    def operands(self, pre, hb):
        return (hb,)


def runners(backend):
    return fused_half


def fused_half(cell: RevCellSpec) -> FusedHalf:
    """The fused half-update of ``cell``; ``ValueError`` for a cell without kernels."""
    for spec, half in ((RevGRUCell, GRUHalf), (RevLSTMCell, LSTMHalf)):
        if type(cell) is spec:
            return half(cell)
    raise ValueError(f"no fused Triton kernels for the reversible cell {type(cell).__name__}; "
                     "use backend='reference'")


class StoreStep(torch.autograd.Function):
    """One half-update of ``memory="store"``: ``apply(half, buf, active, xp, hb, w_hh, *own,
    *surrogates)`` -> (*new surrogates, *new states). The surrogates' values are the exact
    fixed-point ones; their gradients come from :meth:`FusedHalf.backward` (spec §3.2)."""

    @staticmethod
    def forward(ctx, half: FusedHalf, buf: TritonBuffer | None, active: Tensor | None, xp: Tensor, hb: Tensor,
                w_hh: Tensor, *states: Tensor):
        n = len(states) // 2
        own = states[:n]
        pre, new, f = half.forward(xp, hb, w_hh, own, buf, active)
        ctx.half, ctx.active, ctx.layout = half, active, (len(pre), n)
        ctx.save_for_backward(hb, w_hh, *pre, *own, *new)
        ctx.mark_non_differentiable(*new)
        return (f, *(fixed.to_float(s, f.dtype) for s in new[1:]), *new)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor):
        half, (n_pre, n) = ctx.half, ctx.layout
        hb, w_hh, *rest = ctx.saved_tensors
        pre, prev, new = tuple(rest[:n_pre]), tuple(rest[n_pre:n_pre + n]), tuple(rest[n_pre + n:])
        dprev, da = half.backward(pre, prev, new, grads[:n], ctx.active)
        dhb = half.grad_hb(pre, hb, w_hh, da)
        dw = half.cell.grad_weight_hh(da, half.operands(pre, hb))
        return (None, None, None, da, dhb, dw, *(None,) * n, *dprev)
