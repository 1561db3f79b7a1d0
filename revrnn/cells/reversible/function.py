"""Running a reversible stack: the exact forward, the reversible autograd Function and the
``store`` baseline.

Both memory modes run the same quantised forward, t-major (every layer at step t, then t + 1)
with one LIFO information buffer for all layers, and identical float gate computations, so
they produce bit-identical states:

* ``reversible`` — :class:`Reversible`: forward keeps only the final fixed-point states and the
  buffer. Backward walks t = T-1 ... 0 and, per layer from the top, recomputes the gates of
  half 2 from h1_t, undoes h2, recomputes the gates of half 1 from the restored h2_{t-1},
  undoes h1, and differentiates each half-update with the gates it has just computed (no
  separate re-forward). Weight gradients are one GEMM per chunk of steps, so backward memory
  is O(chunk), not O(T).
* ``store`` — :func:`run_store`: the same forward under autograd through straight-through
  fixed-point conversions; autograd keeps every activation. It is the comparison baseline and
  the ground truth for the reversible gradients.

A step runs what the backend's glue gives for the cell (``RevPlan.halves``): the cell specs'
torch ops (:mod:`.reference`: :func:`_step`, :func:`_step_back`) or the fused Triton
half-updates (:mod:`.triton`; same structure, but the gates are Triton's, so the bits differ
from the torch path at rounding level).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.nn.functional import linear

from ..base import Params
from . import fixed
from .base import Ints, RevCellSpec, StraightThrough, join_halves, split_halves
from .buffer import MAX_CHUNK_OPS, InformationBuffer


@dataclass
class BufferStats:
    """What the last forward's information buffer held (bits), beside the cost of storing the
    hidden states in float32 at every step, the reference of spec §3.4."""

    used_bits: int
    optimal_bits: float
    float32_state_bits: int

    @property
    def ratio(self) -> float:
        """float32 hidden-state storage / buffer bits actually used."""
        return self.float32_state_bits / max(self.used_bits, 1)


@dataclass
class RevPlan:
    """Everything about one run that is not a differentiable tensor."""

    cells: list[RevCellSpec]
    names: list[list[str]]           # per layer: parameter names, in the order passed
    mask: Tensor | None = None       # (T, B) bool: valid steps of variable-length input
    drop: list[Tensor | None] = field(default_factory=list)  # per layer: mask on its input
    chunk: int = 64                  # steps per chunk
    verify: bool = False
    #: per layer, the half-updates of the backend that runs them (its ``runner_for``): a
    #: :class:`Halves` with ``step``, ``step_back`` and the ``buffer`` class they work with
    halves: list[Any] = field(default_factory=list)
    stats: BufferStats | None = None
    #: where the forward ran, for a backend whose gates depend on it (the reverse must recompute
    #: the forward's gates bit for bit): the compiled executor's ``where`` (CPU: its threads)
    threads: Any = None

    @property
    def forget_bits(self) -> int:
        return self.cells[0].forget_bits

    @property
    def ops_per_step(self) -> int:
        return multiplies_per_step(self.cells)

    def chunks(self, T: int) -> list[tuple[int, int]]:
        return [(s, min(s + self.chunk, T)) for s in range(0, T, self.chunk)]

    def active(self, t: int) -> Tensor | None:
        return None if self.mask is None else self.mask[t].unsqueeze(1)

    def dropped(self, layer: int, x: Tensor) -> Tensor:
        mask = self.drop[layer] if layer < len(self.drop) else None
        return x if mask is None else x * mask

    def params(self, flat: tuple[Tensor, ...]) -> list[Params]:
        out, k = [], 0
        for names in self.names:
            out.append(dict(zip(names, flat[k:k + len(names)])))
            k += len(names)
        return out

    def new_buffer(self, batch: int, device: torch.device) -> InformationBuffer | None:
        if not self.forget_bits:
            return None
        return self.halves[0].buffer((batch, self.cells[0].half), self.forget_bits, device)

    def record(self, buf: InformationBuffer | None, T: int, batch: int) -> None:
        states = sum(len(c.state_sizes) * c.hidden_size for c in self.cells)
        self.stats = BufferStats(buf.used_bits if buf else 0, buf.optimal_bits if buf else 0.0,
                                 32 * T * batch * states)


def multiplies_per_step(cells: list[RevCellSpec]) -> int:
    """Buffered multiplies per buffer element in one step of the whole stack (two halves per
    layer); 0 without forgetting, where nothing is multiplied."""
    return 2 * sum(c.multiplies for c in cells) if cells[0].forget_bits else 0


def check_chunk(chunk: int, cells: list[RevCellSpec]) -> None:
    """``chunk`` steps must fit the buffer's 1024 multiplies per element per chunk."""
    per_step = max(1, multiplies_per_step(cells))
    limit = max(1, MAX_CHUNK_OPS // per_step)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or not 1 <= chunk <= limit:
        raise ValueError(f"chunk_size must be an int in [1, {limit}] for this stack "
                         f"({per_step} buffered multiplies per step), got {chunk!r}")
    if per_step > MAX_CHUNK_OPS:
        raise ValueError(f"a reversible stack of {len(cells)} layers makes {per_step} multiplies per "
                         f"step, more than the {MAX_CHUNK_OPS} a buffer chunk can tag")


def project(cell: RevCellSpec, p: Params, x: Tensor) -> tuple[Tensor, Tensor]:
    """Input projections of both halves (with their biases)."""
    return tuple(linear(x, w_ih, b) for w_ih, _, b in (cell.half_params(p, 1), cell.half_params(p, 2)))


def _floats(ints: Ints, dtype: torch.dtype) -> tuple[Tensor, ...]:
    return tuple(fixed.to_float(s, dtype) for s in ints)


def _step(cell: RevCellSpec, p: Params, xp: tuple[Tensor, Tensor], own: Ints, sur: tuple[Tensor, ...] | None,
          h: Tensor, buf, active: Tensor | None):
    """One step of one layer: half 1 from the old h2, then half 2 from the new h1. With ``sur``
    (store mode) the differentiable surrogate states are advanced beside the exact ones; their
    values are the exact ones, so both modes compute bit-identical gates. ``h`` is the float
    value of ``own[0]`` (in store mode ``sur[0]`` itself). Returns (new states, new surrogates
    or None, float value of the new h)."""
    store = sur is not None
    G = cell.half
    own1, own2 = split_halves(own, G)
    sur1, sur2 = split_halves(sur, G) if store else (None, None)
    gt = cell.gates(xp[0], h[:, G:], p["weight_hh1"])
    with torch.no_grad():
        own1 = cell.advance(own1, gt, buf, active)
    if store:
        sur1 = cell.surrogate(sur1, gt, own1, active)
    h1 = sur1[0] if store else fixed.to_float(own1[0], h.dtype)
    gt = cell.gates(xp[1], h1, p["weight_hh2"])
    with torch.no_grad():
        own2 = cell.advance(own2, gt, buf, active)
    if store:
        sur = join_halves(sur1, cell.surrogate(sur2, gt, own2, active))
        return join_halves(own1, own2), sur, sur[0]
    return join_halves(own1, own2), None, torch.cat([h1, fixed.to_float(own2[0], h.dtype)], dim=1)


def _forward(plan: RevPlan, params: list[Params], x: Tensor, ints: list[Ints],
             surs: list[tuple[Tensor, ...]] | None):
    """The quantised forward; updates ``ints`` (and ``surs``) in place, returns the top layer's
    outputs and the buffer."""
    T, B = x.shape[:2]
    buf = plan.new_buffer(B, x.device)
    hs = [s[0] for s in surs] if surs is not None else [fixed.to_float(s[0], x.dtype) for s in ints]
    outs, out = [], None
    for s, e in plan.chunks(T):
        if buf is not None:
            buf.begin_chunk((e - s) * plan.ops_per_step)
        y = plan.halves[0].forward_chunk(plan, params, x[s:e], s, ints, surs, hs, buf)
        if surs is not None:  # store: the outputs are part of the graph
            outs.append(y)
        else:  # written in place: a concatenation would hold the outputs twice
            out = y.new_empty((T, *y.shape[1:])) if out is None else out
            out[s:e] = y
        if buf is not None:
            buf.end_chunk()
    return (torch.cat(outs) if surs is not None else out), buf


class Halves:
    """What runs a reversible stack on a backend, chunk by chunk: by default one step of one
    layer at a time through the backend's ``step`` and ``step_back`` (the half-updates of
    :func:`_step` and :func:`_step_back`, or fused kernels); a compiled backend overrides
    :meth:`forward_chunk` and :meth:`backward_chunk` to run the whole chunk at once. The first
    layer's object runs the stack (every layer has the same cell and backend)."""

    #: the information buffer class the half-updates work with
    buffer = InformationBuffer

    def forward_chunk(self, plan: RevPlan, params: list[Params], x: Tensor, start: int, ints: list[Ints],
                      surs: list[tuple[Tensor, ...]] | None, hs: list[Tensor], buf) -> Tensor:
        """Steps ``start .. start + len(x)`` of every layer (``x``: the chunk's input); updates
        ``ints``, ``surs`` (store mode) and ``hs`` (the float value of each layer's h) in place and
        returns the top layer's outputs, 0 on ended rows."""
        xp0 = project(plan.cells[0], params[0], x)
        outs = []
        for t in range(start, start + x.shape[0]):
            active = plan.active(t)
            for layer, cell in enumerate(plan.cells):
                p = params[layer]
                if layer == 0:
                    xp = (xp0[0][t - start], xp0[1][t - start])
                else:
                    xp = project(cell, p, plan.dropped(layer, hs[layer - 1]))
                step = plan.halves[layer].step
                ints[layer], sur, hs[layer] = step(p, xp, ints[layer], None if surs is None else surs[layer],
                                                   hs[layer], buf, active)
                if surs is not None:
                    surs[layer] = sur
            top = hs[-1]
            outs.append(top if active is None else torch.where(active, top, torch.zeros_like(top)))
        return torch.stack(outs)

    def backward_chunk(self, plan: RevPlan, params: list[Params], x: Tensor, start: int, ints: list[Ints],
                       hs: list[Tensor], grads: list[tuple[Tensor, ...]], grad_out: Tensor, buf) -> list[tuple]:
        """Undo the chunk's steps, last first, and differentiate them; updates ``ints``, ``hs``
        and ``grads`` (the gradients of each layer's states) in place. Returns per layer what
        its weight gradients need, stacked over the chunk's rows M = K·B: ((d pre-activations
        of half 1 (M, R), its weight_hh operands), (the same of half 2), the layer's input rows
        (M, I), None for the first layer, whose input is ``x``)."""
        cells, L = plan.cells, len(plan.cells)
        xp0 = project(cells[0], params[0], x)
        record: list[list] = [[] for _ in range(L)]
        for t in range(start + x.shape[0] - 1, start - 1, -1):
            active = plan.active(t)
            g_top = grad_out[t - start] if active is None else grad_out[t - start] * active
            grads[-1] = (grads[-1][0] + g_top, *grads[-1][1:])
            for layer in range(L - 1, -1, -1):
                cell, p = cells[layer], params[layer]
                x_in = None
                if layer == 0:
                    xp = (xp0[0][t - start], xp0[1][t - start])
                else:
                    x_in = plan.dropped(layer, hs[layer - 1])
                    xp = project(cell, p, x_in)
                step_back = plan.halves[layer].step_back
                ints[layer], grads[layer], half1, half2, hs[layer] = step_back(p, xp, ints[layer], grads[layer],
                                                                               hs[layer], buf, active)
                if layer > 0:
                    d_in = plan.dropped(layer, half1[0].matmul(p["weight_ih1"]) + half2[0].matmul(p["weight_ih2"]))
                    grads[layer - 1] = (grads[layer - 1][0] + d_in, *grads[layer - 1][1:])
                record[layer].append((half1, half2, x_in))
        out = []
        for layer in range(L):
            steps = record[layer][::-1]  # back in time order
            halves = tuple((torch.cat([r[j][0] for r in steps]), tuple(torch.cat(o) for o in zip(*(r[j][1] for r in steps))))
                           for j in (0, 1))
            out.append((*halves, None if layer == 0 else torch.cat([r[2] for r in steps])))
        return out


def _step_back(cell: RevCellSpec, p: Params, xp: tuple[Tensor, Tensor], own: Ints, grad: tuple[Tensor, ...],
               h: Tensor, buf, active: Tensor | None):
    """Undo one step of one layer and differentiate it: half 2 first (its gates come from
    h1_t), then half 1 (its gates come from the h2_{t-1} just restored). ``h`` is the float
    value of ``own[0]``. Returns (previous states, their gradients, (pre-activation gradient,
    weight_hh operands) of half 1 and of half 2, float value of the previous h)."""
    G, dtype = cell.half, h.dtype
    own1, own2 = split_halves(own, G)
    d1, d2 = split_halves(grad, G)
    w1, w2 = p["weight_hh1"], p["weight_hh2"]

    new1 = (h[:, :G], *_floats(own1[1:], dtype))
    gt = cell.gates(xp[1], new1[0], w2)
    prev2 = cell.retreat(own2, gt, buf, active)
    old2 = _floats(prev2, dtype)
    d2, dhb, da2, ops2 = cell.backward(gt, new1[0], w2, old2, _floats(own2, dtype), d2, active)
    d1 = (d1[0] + dhb, *d1[1:])

    gt = cell.gates(xp[0], old2[0], w1)
    prev1 = cell.retreat(own1, gt, buf, active)
    old1 = _floats(prev1, dtype)
    d1, dhb, da1, ops1 = cell.backward(gt, old2[0], w1, old1, new1, d1, active)
    d2 = (d2[0] + dhb, *d2[1:])
    prev = join_halves(prev1, prev2)
    return prev, join_halves(d1, d2), (da1, ops1), (da2, ops2), torch.cat([old1[0], old2[0]], dim=1)


def _check_finite(plan: RevPlan, x: Tensor, flat: tuple[Tensor, ...]) -> None:
    """NaN or inf in the input or a parameter would make the gates NaN: raise, naming it."""
    tensors = {"input": x, **{f"{name}_l{layer}": t for layer, p in enumerate(plan.params(flat)) for name, t in p.items()}}
    bad = torch.stack([~torch.isfinite(t).all() for t in tensors.values()])
    if bad.any():
        names = [k for k, b in zip(tensors, bad.tolist()) if b]
        raise ValueError(f"non-finite values in {', '.join(names)}: reversible cells need finite inputs and weights")


def _initial(plan: RevPlan, states: tuple[Tensor, ...]) -> list[Ints]:
    names = plan.cells[0].state_names
    return [tuple(fixed.to_fixed(s[layer].detach(), names[k]) for k, s in enumerate(states))
            for layer in range(len(plan.cells))]


def _check_length(T: int) -> None:
    if T >= fixed.MAX_STEPS:
        raise OverflowError(f"a reversible sequence must be shorter than 2**39 steps, got {T}")


def _precision_knobs() -> list[tuple[object, str]]:
    """The per-backend float32 matmul precision settings (torch >= 2.9), else none."""
    backends = [getattr(torch.backends.cuda, "matmul", None), getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)]
    return [(b, "fp32_precision") for b in backends if b is not None and hasattr(b, "fp32_precision")]


def matmul_precision() -> tuple[str, ...]:
    """The float32 matmul precision in force (TF32, bf16 or IEEE), per backend where torch has it."""
    knobs = _precision_knobs()
    return tuple(getattr(b, a) for b, a in knobs) if knobs else (torch.get_float32_matmul_precision(),)


@contextlib.contextmanager
def replay_precision(precision: tuple[str, ...]):
    """Run backward's gate GEMMs with the float32 matmul precision the forward used: a different
    precision changes gate bits and breaks exact reversal."""
    before = matmul_precision()
    _set_precision(precision)
    try:
        yield
    finally:
        _set_precision(before)


def _set_precision(precision: tuple[str, ...]) -> None:
    knobs = _precision_knobs()
    if knobs:
        for (b, a), value in zip(knobs, precision):
            setattr(b, a, value)
    else:
        torch.set_float32_matmul_precision(precision[0])


class Reversible(torch.autograd.Function):
    """``apply(plan, x, *states, *params)`` -> (output, *final states); see the module docstring."""

    @staticmethod
    def forward(ctx, plan: RevPlan, x: Tensor, *tensors: Tensor):
        n = len(plan.cells[0].state_sizes)
        states, flat = tensors[:n], tensors[n:]
        _check_length(x.shape[0])
        _check_finite(plan, x, flat)
        start = _initial(plan, states)
        ints = list(start)
        with torch.no_grad(), torch.autocast(x.device.type, enabled=False):  # same gate dtype both ways
            out, buf = _forward(plan, plan.params(flat), x, ints, None)
        plan.record(buf, x.shape[0], x.shape[1])
        finals = tuple(torch.stack([fixed.to_float(layer[k], x.dtype) for layer in ints]) for k in range(n))
        ends = [s for layer in ints for s in layer]
        ctx.layout = (n, len(flat), len(ends))
        ctx.plan, ctx.buf = plan, buf
        ctx.precision = matmul_precision()
        # Everything kept for backward goes through save_for_backward, so activation accounting
        # (saved-tensor hooks) sees the buffer arena too.
        ctx.save_for_backward(x, *flat, *ends, *(buf.tensors() if buf else ()),
                              *(s for layer in start for s in layer) if plan.verify else ())
        return (out, *finals)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: Tensor, *grad_finals: Tensor | None):
        with replay_precision(ctx.precision), torch.autocast(grad_out.device.type, enabled=False):
            return Reversible._backward(ctx, grad_out, *grad_finals)

    @staticmethod
    def _backward(ctx, grad_out: Tensor, *grad_finals: Tensor | None):
        plan, buf = ctx.plan, ctx.buf
        n, n_flat, n_ends = ctx.layout
        saved = ctx.saved_tensors
        x, flat = saved[0], saved[1:1 + n_flat]
        ends = saved[1 + n_flat:1 + n_flat + n_ends]
        params = plan.params(flat)
        cells, L = plan.cells, len(plan.cells)
        T, B = x.shape[:2]
        ints = [tuple(ends[layer * n:(layer + 1) * n]) for layer in range(L)]
        hs = [fixed.to_float(s[0], x.dtype) for s in ints]
        zero = x.new_zeros(B, cells[0].hidden_size)
        grads = [tuple(zero if g is None else g[layer] for g in grad_finals) for layer in range(L)]
        grad_p = [dict.fromkeys(p) for p in params]
        dx = torch.empty_like(x) if ctx.needs_input_grad[1] else None

        for s, e in reversed(plan.chunks(T)):
            if buf is not None:
                buf.begin_reverse_chunk((e - s) * plan.ops_per_step)
            chunk = plan.halves[0].backward_chunk(plan, params, x[s:e], s, ints, hs, grads, grad_out[s:e], buf)
            if buf is not None:
                buf.end_reverse_chunk()
            for layer, (*halves, x_rows) in enumerate(chunk):
                x_rows = x[s:e].flatten(0, 1) if x_rows is None else x_rows
                for j, (da, ops) in zip((1, 2), halves):
                    _accumulate(grad_p[layer], f"weight_hh{j}", cells[layer].grad_weight_hh(da, ops))
                    _accumulate(grad_p[layer], f"weight_ih{j}", da.t().matmul(x_rows))
                    if f"bias{j}" in grad_p[layer]:
                        _accumulate(grad_p[layer], f"bias{j}", da.sum(0))
                if layer == 0 and dx is not None:
                    p = params[0]
                    dx[s:e] = (halves[0][0].matmul(p["weight_ih1"]) + halves[1][0].matmul(p["weight_ih2"])).view(
                        e - s, B, p["weight_ih1"].shape[1])

        if buf is not None:
            buf.check_empty()
        if plan.verify:
            start = saved[len(saved) - L * n:]
            if not all(torch.equal(a, b) for a, b in zip((s for layer in ints for s in layer), start)):
                raise RuntimeError("reversible reconstruction failed: the reconstructed initial state differs "
                                   "from the true one (verify=True); forward and reverse gates were not "
                                   "bit-identical")
        d_states = tuple(torch.stack([g[k] for g in grads]) for k in range(n))
        d_flat = [grad_p[layer][name] for layer, names in enumerate(plan.names) for name in names]
        return (None, dx, *d_states, *d_flat)


def _accumulate(grads: dict[str, Tensor | None], name: str, value: Tensor) -> None:
    grads[name] = value if grads[name] is None else grads[name] + value


def run_store(plan: RevPlan, x: Tensor, states: tuple[Tensor, ...], flat: tuple[Tensor, ...]):
    """The same quantised forward under autograd (``memory="store"``): (output, *final states)."""
    _check_length(x.shape[0])
    _check_finite(plan, x, flat)
    ints = _initial(plan, states)
    surs = [tuple(StraightThrough.apply(s[layer], fixed.to_float(i, x.dtype)) for s, i in zip(states, ints[layer]))
            for layer in range(len(plan.cells))]
    with torch.autocast(x.device.type, enabled=False):
        out, buf = _forward(plan, plan.params(flat), x, ints, surs)
    plan.record(buf, x.shape[0], x.shape[1])
    n = len(states)
    return (out, *(torch.stack([layer[k] for layer in surs]) for k in range(n)))
