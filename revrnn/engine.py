"""The sequence engine: one autograd Function per layer and direction runs the whole time loop.

The engine is cell-agnostic. It takes the time-parallel projection ``xp`` (T, B, G), the
initial state and the cell's recurrent parameters (or, where the backend projects inside its
loop, :attr:`Plan.takes_input`, the layer input and every parameter), walks the sequence in
chunks through a backend, and owns the memory strategy:

* ``store`` — the backend keeps its residuals for every chunk (full BPTT), and the projection
  only where its backward reads it (``Backend.backward_reads_xp``; the compiled executors' and
  Triton's do not, so their peak holds no T·B·G projection through backward);
* ``recompute`` — only the state at the start of each chunk of ``checkpoint_every`` steps is
  kept; backward re-runs one chunk at a time to rebuild its residuals (√T chunks by default).
  With ``checkpoint_slots=s`` instead, at most ``s`` states are kept at once and steps are
  re-run following the binomial schedule of :mod:`revrnn.schedule` (revolve), which is
  optimal in step evaluations for that budget.

With ``recompute`` and a row-wise projection the engine also projects chunk-wise
(:attr:`Plan.project`): it takes the layer input instead of its projection, projects each chunk
when the chunk runs and drops it after, and in backward pushes each chunk's projection gradient
through the projection at once (the input's gradient for those steps, the projection's parameter
gradients accumulated), so no tensor of the projection's size T·B·G is ever alive. Cells whose
projection uses statistics over the whole sequence (the LiGRU's and LiBRU's batch norm) keep
the projection and its gradient for the whole sequence.

Truncated BPTT belongs to the training loop (detach the state every k steps), not here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from .backends import Backend, Chunk
from .cells.base import CellSpec, Params, State
from .accounting import hold, unhold
from .schedule import binomial, check_slots, chunk_length

MEMORY = ("store", "recompute")


def check_memory(memory: str, checkpoint_every: int | None, modes: tuple[str, ...] = MEMORY,
                 checkpoint_slots: int | None = None) -> None:
    if memory not in modes:
        raise ValueError(f"memory must be one of {', '.join(map(repr, modes))}, got {memory!r}")
    if checkpoint_every is not None and (
            not isinstance(checkpoint_every, int) or isinstance(checkpoint_every, bool) or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be a positive int or None, got {checkpoint_every!r}")
    if checkpoint_slots is not None:
        check_slots(checkpoint_slots)
        if memory != "recompute":
            raise ValueError(f"checkpoint_slots needs memory='recompute', got memory={memory!r}")
        if checkpoint_every is not None:
            raise ValueError("give checkpoint_every (fixed chunks) or checkpoint_slots (binomial "
                             f"schedule), not both; got {checkpoint_every!r} and {checkpoint_slots!r}")


@dataclass
class Plan:
    """Everything about one layer-direction run that is not a differentiable tensor."""

    cell: CellSpec
    backend: Backend
    memory: str = "store"
    checkpoint_every: int | None = None
    checkpoint_slots: int | None = None  # binomial schedule with this many kept states
    mask: Tensor | None = None  # (T, B) bool
    extras: Params = field(default_factory=dict)
    names: tuple[str, ...] = ()  # parameter names, in the order given to apply()
    t0: int = 0  # the sequence's first step (a stream's chunk starts later; time-gated cells read it)
    # Chunk-wise projection: ``project(params, x[s:e], s, e)`` is the projection of steps s .. e-1
    # from the layer input (differentiable in both); the engine then takes the layer input and
    # every parameter of the cell, and hands the backend those in ``step_names`` only.
    project: Callable[[Params, Tensor, int, int], Tensor] | None = None
    step_names: tuple[str, ...] | None = None
    # The backend takes the layer input and every parameter, and projects itself
    # (Runner.takes_input): its chunks are marked ``is_input``.
    takes_input: bool = False

    def chunk_bounds(self, T: int) -> list[tuple[int, int]]:
        K = chunk_length(self.memory, T, self.checkpoint_every)
        return [(s, min(s + K, T)) for s in range(0, T, K)]

    def chunk(self, xp: Tensor, s: int, e: int) -> Chunk:
        """Steps ``s .. e-1``; ``xp`` holds exactly those steps' projected inputs (their layer
        inputs where the backend takes them, :attr:`takes_input`)."""
        return Chunk(t0=self.t0 + s, xp=xp, mask=None if self.mask is None else self.mask[s:e],
                     is_input=self.takes_input)

    def step_params(self, params: Params) -> Params:
        return params if self.step_names is None else {k: params[k] for k in self.step_names}

    def inputs(self, inp: Tensor, params: Params, s: int, e: int) -> Chunk:
        """Steps ``s .. e-1`` of ``inp``, the projection or (chunk-wise) the layer input."""
        if self.project is None:
            return self.chunk(inp[s:e], s, e)
        with torch.no_grad():
            return self.chunk(self.project(params, inp[s:e], s, e), s, e)


class _Sequence(torch.autograd.Function):
    """The whole time loop as one autograd node.

    ``store`` saves each chunk's residuals (a tuple of tensors) with ``save_for_backward``;
    ``recompute`` keeps the state at each chunk start and rebuilds residuals in backward, or,
    with ``checkpoint_slots``, follows the binomial schedule (:class:`_Binomial`).
    All support ``retain_graph=True``.
    """

    @staticmethod
    def forward(ctx, plan: Plan, n_state: int, inp: Tensor, *tensors: Tensor):
        state, params = tuple(tensors[:n_state]), dict(zip(plan.names, tensors[n_state:]))
        step_params = plan.step_params(params)
        T = inp.shape[0]
        outputs = None

        def emit(s: int, out: Tensor, kept: tuple[Tensor, ...] = ()) -> None:
            nonlocal outputs
            if outputs is None:
                if out.shape[0] == T and not any(_shares(out, t) for t in kept):
                    outputs = out  # one chunk: its output is the sequence's (no copy)
                    return
                outputs = out.new_empty((T, *out.shape[1:]))
            outputs[s:s + out.shape[0]] = out

        ctx.plan = plan
        kept: list[tuple[Tensor, ...]] = []  # per chunk: residuals (store) or start state
        if plan.checkpoint_slots is not None:
            run = _Binomial(plan, step_params, lambda s, e: plan.inputs(inp, params, s, e))
            ctx.h0 = hold(t.detach() for t in state)
            ctx.trail, state = run.descend(T, state, emit)
        else:
            store = plan.memory == "store"
            for s, e in plan.chunk_bounds(T):
                if not store:
                    kept.append(state)
                out, state, res = plan.backend.forward_chunk(
                    plan.cell, step_params, plan.extras, plan.inputs(inp, params, s, e), state, keep=store)
                emit(s, out, tuple(res or ()))
                if store:
                    kept.append(tuple(res))
        ctx.sizes = [len(k) for k in kept]
        if (plan.memory == "store" and plan.checkpoint_slots is None and plan.project is None
                and not plan.backend.backward_reads_xp):
            inp = _shape_of(inp)  # backward reads the chunks' residuals, not their projection
        ctx.save_for_backward(inp, *tensors[n_state:], *(t for k in kept for t in k))
        ctx.mark_non_differentiable(*[t for t in state if not t.is_floating_point()])
        return (outputs, *state)

    @staticmethod
    def backward(ctx, grad_out: Tensor, *grad_state: Tensor):
        # Custom Functions materialise missing output grads as zeros, so none is None here.
        plan: Plan = ctx.plan
        saved = ctx.saved_tensors
        inp, n_p = saved[0], len(plan.names)
        params = dict(zip(plan.names, saved[1:1 + n_p]))
        step_params = plan.step_params(params)
        flat, kept = saved[1 + n_p:], []
        for n in ctx.sizes:
            kept.append(flat[:n])
            flat = flat[n:]
        T = inp.shape[0]
        # of the projection, or (chunk-wise) of the layer input, which may need none: each chunk's
        # part, joined at the end (one chunk's is the whole, uncopied)
        need_in = ctx.needs_input_grad[2]
        grad_in: dict[int, Tensor] = {}
        grad_p: dict[str, Tensor | None] = {k: None for k in plan.names}

        def add(k: str, g: Tensor | None) -> None:
            if g is not None:
                grad_p[k] = g if grad_p[k] is None else grad_p[k] + g

        def reverse(s: int, e: int, residuals=None, start: State | None = None) -> None:
            """Differentiate steps s .. e-1 from their residuals, or recompute them from ``start``."""
            nonlocal grad_state
            graph = None
            if plan.project is None:
                chunk = plan.chunk(inp[s:e], s, e)
            else:  # projected once, with its graph, for the recompute and the push below
                with torch.enable_grad():
                    x = inp[s:e].detach().requires_grad_(need_in)
                    leaves = {k: v.detach().requires_grad_(v.requires_grad) for k, v in params.items()}
                    xp = plan.project(leaves, x, s, e)
                graph = (xp, x, leaves)
                chunk = plan.chunk(xp.detach(), s, e)
            if residuals is None:
                residuals = plan.backend.recompute_residuals(plan.cell, step_params, plan.extras, chunk, start)
            held = hold(residuals)  # counted as activations while this chunk's backward runs
            gxp, grad_state, gp = plan.backend.backward_chunk(
                plan.cell, step_params, plan.extras, chunk, residuals, grad_out[s:e], grad_state)
            del held, residuals
            for k, g in gp.items():
                add(k, g)
            if graph is None:
                if need_in:
                    grad_in[s] = gxp
                return
            xp, x, leaves = graph
            wrt = {k: v for k, v in leaves.items() if v.requires_grad}
            if x.requires_grad:
                wrt[""] = x
            if wrt and xp.requires_grad:
                for k, g in zip(wrt, torch.autograd.grad(xp, list(wrt.values()), gxp, allow_unused=True)):
                    if k:
                        add(k, g)
                    elif g is not None:
                        grad_in[s] = g

        if plan.checkpoint_slots is not None:
            run = _Binomial(plan, step_params, lambda s, e: plan.inputs(inp, params, s, e))
            trail, ctx.trail = ctx.trail, None  # backward owns the kept states and frees them as it goes
            if trail is None:  # a second backward (retain_graph=True): redo the forward part
                trail, _ = run.descend(T, unhold(ctx.h0))
            run.reverse(T, *trail, reverse)
        else:
            bounds = plan.chunk_bounds(T)
            for i in range(len(bounds) - 1, -1, -1):
                s, e = bounds[i]
                if plan.memory == "recompute":
                    reverse(s, e, start=kept[i])
                else:
                    reverse(s, e, kept[i])
        return (None, None, _joined(inp, grad_in) if need_in else None, *grad_state,
                *(grad_p[k] for k in plan.names))


def _shares(a: Tensor, b: Tensor) -> bool:
    """Whether ``a`` and ``b`` use the same memory (an output that shares a saved residual's must
    be copied: the caller may change it in place)."""
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _shape_of(t: Tensor) -> Tensor:
    """A stand-in for ``t`` with its shape, dtype and device, and the storage of one element."""
    return t.new_zeros(()).expand(t.shape)


def _joined(inp: Tensor, parts: dict[int, Tensor]) -> Tensor:
    """The gradient of ``inp`` from each chunk's part, by first step (zero where a chunk gave none)."""
    if len(parts) == 1 and 0 in parts and parts[0].shape == inp.shape and parts[0].dtype == inp.dtype:
        return parts[0]
    out = torch.zeros_like(inp) if sum(p.shape[0] for p in parts.values()) < inp.shape[0] else torch.empty_like(inp)
    for s, g in parts.items():
        out[s:s + g.shape[0]] = g
    return out


class _Binomial:
    """Runs the binomial schedule of :func:`revrnn.schedule.binomial` for one layer-direction.

    Kept states live in a dict of :func:`revrnn.accounting.hold` handles, not in autograd's saved
    tensors, so that backward can drop each one when the schedule frees it: at most
    ``checkpoint_slots`` states are held at any time, plus the residuals of the step being
    differentiated (and, until its backward, of the last step, taped by the forward).
    Advances run in pieces of at most ``checkpoint_slots`` steps, so that re-projected inputs
    in flight stay within the budget's order.
    """

    def __init__(self, plan: Plan, params: Params, chunk: Callable[[int, int], Chunk]) -> None:
        self.plan, self.params, self.chunk = plan, params, chunk
        self.slots: int = plan.checkpoint_slots

    def advance(self, s: int, e: int, state: State, emit: Callable[..., None] | None) -> State:
        for a in range(s, e, self.slots):
            b = min(a + self.slots, e)
            out, state, _ = self.plan.backend.forward_chunk(
                self.plan.cell, self.params, self.plan.extras, self.chunk(a, b), state, keep=False)
            if emit is not None:
                emit(a, out)
        return state

    def descend(self, T: int, state: State, emit: Callable[..., None] | None = None):
        """The forward part of the schedule (up to its first reverse, which tapes step T − 1):
        ``((kept states, tape), final state)``."""
        kept: dict[int, tuple] = {}
        for a in binomial(T, self.slots):
            if a.op == "store":
                kept[a.a] = hold(t.detach() for t in state)
            elif a.op == "advance":
                state = self.advance(a.a, a.b, state, emit)
            else:
                out, state, res = self.plan.backend.forward_chunk(
                    self.plan.cell, self.params, self.plan.extras, self.chunk(T - 1, T), state, keep=True)
                if emit is not None:
                    emit(T - 1, out, tuple(res))
                return (kept, hold(t.detach() for t in res)), state
        raise AssertionError("a binomial schedule reverses its last step")

    def reverse(self, T: int, kept: dict[int, tuple], tape: tuple, reverse: Callable[..., None]) -> None:
        """The backward part: everything after the first reverse, whose residuals are ``tape``;
        ``reverse(s, e, residuals)`` or ``reverse(s, e, start=state)`` differentiates steps s .. e-1."""
        actions = binomial(T, self.slots)
        next(a for a in actions if a.op == "reverse")
        reverse(T - 1, T, unhold(tape))
        del tape
        state: State = ()
        for a in actions:
            if a.op == "store":
                kept[a.a] = hold(state)
            elif a.op == "restore":
                state = unhold(kept[a.a])
            elif a.op == "free":
                del kept[a.a]
            elif a.op == "advance":
                state = self.advance(a.a, a.b, state, None)
            else:
                reverse(a.a, a.a + 1, start=state)


def run_sequence(plan: Plan, inp: Tensor, state: State, params: Params) -> tuple[Tensor, State]:
    """Run ``plan.cell`` from ``state`` over ``inp``: the projection ``xp`` (T, B, G) and the
    recurrent parameters, or with :attr:`Plan.project` the layer input (T, B, I) and every
    parameter; returns outputs (T, B, H_out) and the final state. Differentiable in ``inp``,
    ``state`` and ``params``.

    A backend whose steps are plain autograd (the reference) runs ``store`` directly under
    autograd, which keeps exactly what each step's backward needs; everything else goes
    through one :class:`_Sequence` node.
    """
    if not torch.is_grad_enabled() or not any(t.requires_grad for t in (inp, *state, *params.values())):
        return _forward_only(plan, inp, state, params)
    if plan.memory == "store" and plan.backend.autograd_steps and plan.project is None:
        return plan.backend.forward_autograd(plan.cell, params, plan.extras, plan.chunk(inp, 0, inp.shape[0]), state)
    plan.names = tuple(params)
    out, *final = _Sequence.apply(plan, len(state), inp, *state, *params.values())
    return out, tuple(final)


def _forward_only(plan: Plan, inp: Tensor, state: State, params: Params) -> tuple[Tensor, State]:
    """Without a graph (inference, or a stream's forward pass): the chunks run keeping nothing."""
    T, outputs = inp.shape[0], None
    step_params = plan.step_params(params)
    with torch.no_grad():
        for s, e in plan.chunk_bounds(T):
            out, state, _ = plan.backend.forward_chunk(plan.cell, step_params, plan.extras,
                                                       plan.inputs(inp, params, s, e), state, keep=False)
            if e - s == T:
                outputs = out
            else:  # written in place: a concatenation would hold the outputs twice
                outputs = out.new_empty((T, *out.shape[1:])) if outputs is None else outputs
                outputs[s:e] = out
    return outputs, tuple(state)
