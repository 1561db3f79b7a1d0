"""The reference backend: the cell spec's pure-PyTorch step, differentiated by autograd.

It is the ground truth every other backend is tested against, and it runs in float64.
``store`` runs the steps directly under autograd. For ``recompute`` the engine re-runs a
chunk in backward; its residuals are the chunk's inputs, and its backward rebuilds the
chunk's graph one step at a time from the states it recomputes on the way.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cells.base import CellSpec, Params, State
from .base import Backend, Chunk


def masked_step(cell: CellSpec, p: Params, extras: Params, xp: Tensor, state: State, t: int,
                mask: Tensor | None) -> tuple[Tensor, State]:
    """One step of ``cell``; finished sequences (``mask`` false) keep their state and output 0."""
    new = cell.step(p, xp, state, t, extras)
    if mask is None:
        return new[0], new
    m = mask[:, None]
    new = tuple(torch.where(m, n, s) for n, s in zip(new, state))
    return torch.where(m, new[0], torch.zeros((), dtype=new[0].dtype, device=new[0].device)), new


class ReferenceBackend(Backend):
    """Every cell, any dtype and device: the engine runs the spec's ``step`` under autograd.
    Families whose cells need more than a step (the reversible half-updates) have glue here too."""

    name = "reference"
    autograd_steps = True

    def supports(self, cell: CellSpec, dtype: torch.dtype) -> bool:
        return True

    def forward_autograd(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                         state: State) -> tuple[Tensor, State]:
        outs = []
        # unbind, not xp[i]: the backward of T selects would build T full-size zero gradients.
        for i, xp in enumerate(chunk.xp.unbind(0)):
            mask = None if chunk.mask is None else chunk.mask[i]
            out, state = masked_step(cell, p, extras, xp, state, chunk.t0 + i, mask)
            outs.append(out)
        return torch.stack(outs), state

    def forward_chunk(self, cell, p, extras, chunk, state, keep):
        with torch.no_grad():
            out, end = self.forward_autograd(cell, p, extras, chunk, state)
        return out, end, (tuple(state) if keep else None)

    def recompute_residuals(self, cell, p, extras, chunk, state):
        return tuple(state)  # backward_chunk re-runs the chunk itself

    def backward_chunk(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        # Re-run the chunk keeping each step's graph on detached leaves, then walk it back.
        names = [k for k, v in p.items() if v.requires_grad]
        leaf_p = {k: v.detach().requires_grad_(k in names) for k, v in p.items()}
        state = residuals
        steps = []
        with torch.enable_grad():
            for i in range(chunk.xp.shape[0]):
                leaves = tuple(s.detach().requires_grad_() for s in state)
                xp = chunk.xp[i].detach().requires_grad_()
                mask = None if chunk.mask is None else chunk.mask[i]
                out, state = masked_step(cell, leaf_p, extras, xp, leaves, chunk.t0 + i, mask)
                steps.append((leaves, xp, out, state))
        grad_p: dict[str, Tensor | None] = {k: None for k in p}
        grad_xp = torch.empty_like(chunk.xp)
        for i in range(len(steps) - 1, -1, -1):
            leaves, xp, out, new = steps.pop()
            inputs = (*leaves, xp, *(leaf_p[k] for k in names))
            g = torch.autograd.grad((out, *new), inputs, (grad_out[i], *grad_state),
                                    allow_unused=True, materialize_grads=True)
            n = len(leaves)
            grad_state, grad_xp[i] = g[:n], g[n]
            for k, gk in zip(names, g[n + 1:]):
                grad_p[k] = gk if grad_p[k] is None else grad_p[k] + gk
        return grad_xp, tuple(grad_state), grad_p
