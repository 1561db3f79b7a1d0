"""What the g-LSTM's sparse paths share (the Triton runner and the compiled executor's): the two
settings their glue adds to its backend — ``glstm_sparse``, ``"auto"`` (sparse when at most half
the chunk's unit-steps are open), ``"always"`` or ``"never"``; and ``sparse_work``, what the sparse
path computed and skipped, summed over runs (:class:`SparseWork`) — each step's open units, and
the gated input projection the cell's ``project_steps`` gives a sparse path that reads a
projection (:func:`gated_projection`: Triton's; the executor's projects inside its loop)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: ``auto`` runs a chunk sparse when at most this fraction of its unit-steps is open
MAX_OPEN = 0.5


@dataclass
class SparseWork:
    """Unit-steps of the g-LSTM evaluated by the sparse path's forward passes (recomputation
    included) against the dense count: ``1 − open/total`` of the pointwise work, of the
    recurrent GEMM and of the kept activations is skipped."""

    open: int = 0
    total: int = 0

    @property
    def skipped_fraction(self) -> float:
        return 1.0 - self.open / self.total if self.total else 0.0


def add_settings(backend) -> None:
    backend.glstm_sparse = "auto"
    backend.sparse_work = SparseWork()


def use_sparse(backend, k: Tensor) -> bool:
    """Whether ``backend`` runs a chunk with time gates ``k`` (K, H) on the sparse path."""
    mode = backend.glstm_sparse
    return mode == "always" or (mode == "auto" and (k > 0).double().mean().item() <= MAX_OPEN)


def open_units(k: Tensor) -> tuple[list[int], Tensor]:
    """Per step the number of open units, and their indices concatenated."""
    nz = (k > 0).nonzero()
    return torch.bincount(nz[:, 0], minlength=k.shape[0]).tolist(), nz[:, 1]


# -- the gated input projection ------------------------------------------------------------
#: What one block of the gated projection costs beyond its multiply-adds, in multiply-adds. CPU:
#: fitted to the projection's forward and backward at T=200 B=32 I=H=256 on 2 cores, where a
#: block costs 0.16 ms, as much as 8·10⁶ of its multiply-adds; GPU: a few kernel launches at
#: about 10 µs each, a guess not yet measured.
BLOCK_COST = {"cpu": 8e6, "cuda": 5e8}
#: Candidate block lengths (steps); the whole sequence is a candidate too.
BLOCK_STEPS = (1, 2, 4, 8, 16, 32, 64, 128)


def projection_blocks(open_: Tensor, B: int, I: int) -> list[tuple[int, int, Tensor]] | None:
    """How the gated projection covers steps whose open units are ``open_`` (T, H) bool, with B
    rows of I inputs: ``(s, e, units)`` blocks of steps, ``units`` those open at some step of the
    block, of the one length that costs the fewest multiply-adds with :data:`BLOCK_COST` per
    block; or None when no length costs less than the dense projection."""
    T, H = open_.shape
    fixed = BLOCK_COST["cuda" if open_.is_cuda else "cpu"]
    best, best_cost = None, 12 * T * B * H * I  # dense: 3 GEMMs over 4 gates of every unit and step
    for L in sorted({min(L, T) for L in BLOCK_STEPS} | {T}):
        if L < 1:
            continue
        n = -(-T // L)
        union = torch.nn.functional.pad(open_, (0, 0, 0, n * L - T)).view(n, L, H).any(1)  # (n, H)
        cost = 12 * L * B * I * int(union.sum()) + n * fixed
        if cost < best_cost:
            best, best_cost = (L, union), cost
    if best is None:
        return None
    L, union = best
    return [(s, min(s + L, T), union[b].nonzero().flatten()) for b, s in enumerate(range(0, T, L))]


class _GatedProjection(torch.autograd.Function):
    """x W^T + b for the gate columns of each block's open units, zero in the others. Every
    block's rows of W (and b) are gathered in one call, and backward sums each block's share of
    d W (and d b) into one buffer in that order, added into place in one call: per block only its
    GEMMs and the columns' gather and scatter remain."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor | None, blocks, H: int):
        T, B, I = x.shape
        xp = x.new_zeros(T, B, 4 * H)
        cols = [torch.cat([units + q * H for q in range(4)]) for _, _, units in blocks]
        index = torch.cat(cols)
        w = weight.index_select(0, index)
        b = None if bias is None else bias.index_select(0, index)
        at = 0
        for (s, e, _), c in zip(blocks, cols):
            n = len(c)
            if n:
                xs, ws = x[s:e].reshape(-1, I), w[at:at + n]
                r = xs @ ws.t() if b is None else torch.addmm(b[at:at + n], xs, ws.t())
                xp[s:e].view(-1, 4 * H).index_copy_(1, c, r)
            at += n
        ctx.save_for_backward(x, weight, w, index)
        ctx.blocks, ctx.cols, ctx.has_bias = blocks, cols, bias is not None
        return xp

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor):
        x, weight, w, index = ctx.saved_tensors
        T, B, I = x.shape
        G = weight.shape[0]
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        dx = x.new_empty(T, B, I) if need_x else None  # every block writes its steps
        dws = w.new_empty(w.shape) if need_w else None  # each block's rows, in the order of index
        dbs = w.new_empty(w.shape[0]) if need_b and ctx.has_bias else None
        at = 0
        for (s, e, _), c in zip(ctx.blocks, ctx.cols):
            n = len(c)
            if not n:
                if dx is not None:
                    dx[s:e] = 0
                continue
            g = grad[s:e].reshape(-1, G).index_select(1, c)  # the only columns a step's gates read
            if dx is not None:
                torch.mm(g, w[at:at + n], out=dx[s:e].view(-1, I))
            if dws is not None:
                torch.mm(g.t(), x[s:e].reshape(-1, I), out=dws[at:at + n])
            if dbs is not None:
                torch.sum(g, 0, out=dbs[at:at + n])
            at += n
        dw = None if dws is None else torch.zeros_like(weight).index_add_(0, index, dws)
        db = None if dbs is None else weight.new_zeros(G).index_add_(0, index, dbs)
        return dx, dw, db, None, None


def gated_projection(x: Tensor, weight: Tensor, bias: Tensor | None, k: Tensor) -> Tensor | None:
    """The g-LSTM's input projection (T, B, 4H) of ``x`` (T, B, I) as its steps read it when the
    time gates are ``k`` (T, H): the four gates' columns of the units open at step t, and zero
    for the others, whose values no path reads (a closed unit keeps its state and takes no
    gradient: k = 0 exactly multiplies both). Computed per block of steps
    (:func:`projection_blocks`), with the gradient of ``x``, ``weight`` and ``bias`` taken from
    those columns only. None when the dense projection is cheaper."""
    blocks = projection_blocks(k > 0, x.shape[1], x.shape[2])
    if blocks is None:
        return None
    return _GatedProjection.apply(x, weight, bias, blocks, k.shape[1])
