"""The sequence engine: one autograd Function per layer and direction runs the whole time loop.

The engine is cell-agnostic. It takes the time-parallel projection ``xp`` (T, B, G), the
initial state and the cell's recurrent parameters, walks the sequence in chunks through a
backend, and owns the memory strategy:

* ``store`` — the backend keeps its residuals for every chunk (full BPTT);
* ``recompute`` — only the state at the start of each chunk of ``checkpoint_every`` steps is
  kept; backward re-runs one chunk at a time to rebuild its residuals (√T chunks by default).
  When the cell's projection is row-wise, the projected inputs are not kept either: backward
  recomputes each chunk's projection from the layer input.

Truncated BPTT belongs to the training loop (detach the state every k steps), not here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .backends import Backend, Chunk
from .cells.base import CellSpec, Params, State

MEMORY = ("store", "recompute")


def check_memory(memory: str, checkpoint_every: int | None, modes: tuple[str, ...] = MEMORY) -> None:
    if memory not in modes:
        raise ValueError(f"memory must be one of {', '.join(map(repr, modes))}, got {memory!r}")
    if checkpoint_every is not None and (
            not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive int or None, got {checkpoint_every!r}")


@dataclass
class Plan:
    """Everything about one layer-direction run that is not a differentiable tensor."""

    cell: CellSpec
    backend: Backend
    memory: str = "store"
    checkpoint_every: int | None = None
    mask: Tensor | None = None  # (T, B) bool
    extras: Params = field(default_factory=dict)
    names: tuple[str, ...] = ()  # recurrent parameter names, in the order given to apply()
    # Recomputes xp[s:e] from the layer input; lets ``recompute`` drop the O(T) projection.
    reproject: Callable[[int, int], Tensor] | None = None

    def chunk_bounds(self, T: int) -> list[tuple[int, int]]:
        if self.memory == "store" and self.checkpoint_every is None:
            K = T
        else:
            K = self.checkpoint_every or max(1, math.isqrt(T - 1) + 1)
        return [(s, min(s + K, T)) for s in range(0, T, K)]

    def chunk(self, xp: Tensor, s: int, e: int) -> Chunk:
        """Steps ``s .. e-1``; ``xp`` holds exactly those steps' projected inputs."""
        return Chunk(t0=s, xp=xp, mask=None if self.mask is None else self.mask[s:e])


class _Sequence(torch.autograd.Function):
    """The whole time loop as one autograd node.

    ``store`` saves each chunk's residuals (a tuple of tensors) with ``save_for_backward``;
    ``recompute`` keeps the state at each chunk start and rebuilds residuals in backward.
    Both support ``retain_graph=True``.
    """

    @staticmethod
    def forward(ctx, plan: Plan, n_state: int, xp: Tensor, *tensors: Tensor):
        state, params = tuple(tensors[:n_state]), dict(zip(plan.names, tensors[n_state:]))
        T = xp.shape[0]
        bounds = plan.chunk_bounds(T)
        store = plan.memory == "store"
        outputs = None
        kept: list[tuple[Tensor, ...]] = []  # per chunk: residuals (store) or start state
        for s, e in bounds:
            if not store:
                kept.append(state)
            out, state, res = plan.backend.forward_chunk(
                plan.cell, params, plan.extras, plan.chunk(xp[s:e], s, e), state, keep=store)
            if outputs is None:
                outputs = out.new_empty((T, *out.shape[1:]))
            outputs[s:e] = out
            if store:
                kept.append(tuple(res))
        ctx.plan, ctx.bounds = plan, bounds
        ctx.sizes = [len(k) for k in kept]
        ctx.drop_xp = not store and plan.reproject is not None
        ctx.xp_meta = (xp.shape, xp.dtype, xp.device)
        ctx.save_for_backward(None if ctx.drop_xp else xp, *tensors[n_state:], *(t for k in kept for t in k))
        ctx.mark_non_differentiable(*[t for t in state if not t.is_floating_point()])
        return (outputs, *state)

    @staticmethod
    def backward(ctx, grad_out: Tensor, *grad_state: Tensor):
        # Custom Functions materialise missing output grads as zeros, so none is None here.
        plan: Plan = ctx.plan
        saved = ctx.saved_tensors
        xp, n_p = saved[0], len(plan.names)
        params = dict(zip(plan.names, saved[1:1 + n_p]))
        flat, kept = saved[1 + n_p:], []
        for n in ctx.sizes:
            kept.append(flat[:n])
            flat = flat[n:]
        shape, dtype, device = ctx.xp_meta
        grad_xp = torch.zeros(shape, dtype=dtype, device=device)
        grad_p: dict[str, Tensor | None] = {k: None for k in plan.names}
        for i in range(len(ctx.bounds) - 1, -1, -1):
            s, e = ctx.bounds[i]
            if ctx.drop_xp:
                with torch.no_grad():
                    chunk = plan.chunk(plan.reproject(s, e), s, e)
            else:
                chunk = plan.chunk(xp[s:e], s, e)
            if plan.memory == "recompute":
                _, _, res = plan.backend.forward_chunk(
                    plan.cell, params, plan.extras, chunk, kept[i], keep=True)
            else:
                res = kept[i]
            gxp, grad_state, gp = plan.backend.backward_chunk(
                plan.cell, params, plan.extras, chunk, res, grad_out[s:e], grad_state)
            grad_xp[s:e] = gxp
            for k, g in gp.items():
                if g is not None:
                    grad_p[k] = g if grad_p[k] is None else grad_p[k] + g
        return (None, None, grad_xp, *grad_state, *(grad_p[k] for k in plan.names))


def run_sequence(plan: Plan, xp: Tensor, state: State, params: Params) -> tuple[Tensor, State]:
    """Run ``plan.cell`` over ``xp`` (T, B, G) from ``state``; returns outputs (T, B, H_out)
    and the final state. Differentiable in ``xp``, ``state`` and the recurrent parameters.

    A backend whose steps are plain autograd (the reference) runs ``store`` directly under
    autograd, which keeps exactly what each step's backward needs; everything else goes
    through one :class:`_Sequence` node.
    """
    if plan.memory == "store" and plan.backend.autograd_steps:
        return plan.backend.forward_autograd(plan.cell, params, plan.extras, plan.chunk(xp, 0, xp.shape[0]), state)
    plan.names = tuple(params)
    out, *final = _Sequence.apply(plan, len(state), xp, *state, *params.values())
    return out, tuple(final)
