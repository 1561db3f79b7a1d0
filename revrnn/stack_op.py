"""A module's whole stack as one custom op while ``torch.compile`` traces it.

Traced step by step, a recurrence unrolls into the graph: compile time grows with T, and a
backend that hands raw pointers to C++ (``cpu``, ``cuda``) or reads values on the host (the
reversible cells' integer core) cannot be traced at all. Under ``torch.compiler.is_compiling()``
the modules therefore call ``revrnn::stack`` instead of running their layers: one
``torch.library`` custom op whose fake implementation gives the output and final states' shapes,
and whose real one runs the module's own eager stack — every backend, every memory strategy —
on the op's tensors (input, initial states, mask, lengths and every parameter, so the compiled
graph's values are the ones used; buffers are the module's own). Compile time no longer depends on T.

Backward is ``revrnn::stack_backward``: the forward keeps its autograd graph in a table under a
handle (an int64 tensor the op returns, saved for backward), and backward differentiates through
it, so each strategy keeps what it keeps in eager mode. An entry leaves the table when its
backward has run or when its handle is freed (a forward whose graph is dropped). Like the eager
modules, a graph can be differentiated once (no ``retain_graph``, no double backward).

A module is found from the op by a key registered when it is made (and again when it is copied
or unpickled: a copy is a module of its own).
"""
from __future__ import annotations

import contextlib
import itertools
import weakref
from typing import Optional

import torch
from torch import Tensor

_MODULES: "weakref.WeakValueDictionary[int, torch.nn.Module]" = weakref.WeakValueDictionary()
_KEYS = itertools.count()
#: handle -> (outputs, their leaves) of a forward waiting for its backward
_GRAPHS: dict[int, tuple[list[Tensor], list[Tensor | None]]] = {}
_HANDLES = itertools.count()


def register(module: torch.nn.Module) -> int:
    """A new key for ``module``."""
    key = next(_KEYS)
    _MODULES[key] = module
    return key


def _module(key: int):
    module = _MODULES.get(key)
    if module is None:
        raise RuntimeError(f"revrnn::stack: module {key} no longer exists")
    return module


@contextlib.contextmanager
def _recording():
    """Autograd records again: a custom op's implementation runs with the autograd dispatch keys
    excluded (its gradient is the registered backward), but this one builds the graph that
    backward differentiates."""
    include = torch._C._dispatch_tls_local_include_set()
    exclude = torch._C._dispatch_tls_local_exclude_set()
    for key in (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.ADInplaceOrView):
        exclude = exclude.remove(key)
    with torch._C._ForceDispatchKeyGuard(include, exclude), torch.enable_grad():
        yield


def _tensors(module) -> list[str]:
    """The attribute names of the parameters of the module's layers, in op order. Buffers (batch
    norm's running statistics) are not inputs: the stack updates them in place, which an op may
    not do to its inputs, so it reads and updates the module's own."""
    return [attr for names in module._names for attr in names.values() if attr in module._parameters]


@torch.library.custom_op("revrnn::stack", mutates_args=())
def stack(key: int, t0: int, needs: list[bool], amp: str, x: Tensor, states: list[Tensor], mask: Optional[Tensor],
          lengths: Optional[Tensor], tensors: list[Tensor]) -> tuple[Tensor, list[Tensor], Tensor]:
    module = _module(key)
    # needs: which of x, states, tensors want a gradient (the op's inputs arrive without it)
    leaves = [t.detach().requires_grad_(g) for t, g in zip((x, *states, *tensors), needs)]
    lx, ls, lt = leaves[0], leaves[1:1 + len(states)], leaves[1 + len(states):]
    # the caller's autocast, which the compiled graph does not carry into an opaque op
    autocast = torch.autocast(x.device.type, dtype=getattr(torch, amp), enabled=bool(amp)) if amp else \
        contextlib.nullcontext()
    with _recording(), autocast, module.using(dict(zip(_tensors(module), lt))):
        out, finals = module._stack(lx, tuple(ls), mask, lengths, t0)
    handle = -1
    if any(needs):
        handle = next(_HANDLES)
        _GRAPHS[handle] = ([out, *finals], [leaf if g else None for leaf, g in zip(leaves, needs)])
    h = torch.tensor(handle, dtype=torch.int64)
    if handle >= 0:  # a forward whose graph is dropped before its backward frees its entry
        weakref.finalize(h, _GRAPHS.pop, handle, None)
    # the fake implementation's dtypes (a backend may hand back its compute dtype under autocast)
    return out.detach().to(x.dtype), [f.detach().to(s.dtype) for f, s in zip(finals, states)], h


@stack.register_fake
def _(key, t0, needs, amp, x, states, mask, lengths, tensors):
    module = _module(key)
    T, B = x.shape[0], x.shape[1]
    return (x.new_empty(T, B, module.cells[-1].output_size * module.num_directions),
            [s.new_empty(s.shape) for s in states], torch.empty((), dtype=torch.int64))


@torch.library.custom_op("revrnn::stack_backward", mutates_args=())
def stack_backward(handle: Tensor, x: Tensor, states: list[Tensor], tensors: list[Tensor], grad_out: Tensor,
                   grad_finals: list[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    entry = _GRAPHS.pop(int(handle), None)
    if entry is None:
        raise RuntimeError("revrnn::stack: this forward's graph was already differentiated (a revrnn module's "
                           "graph can be differentiated once) or freed")
    outputs, leaves = entry
    wanted = [leaf for leaf in leaves if leaf is not None]
    with _recording():  # recompute strategies re-run chunks with a graph inside this backward
        got = iter(torch.autograd.grad(outputs, wanted, [grad_out, *grad_finals], allow_unused=True))
    inputs = (handle, x, *states, *tensors, grad_out, *grad_finals)
    seen = {t.untyped_storage().data_ptr() for t in inputs if t.numel()}
    grads = []
    for leaf, like in zip(leaves, (x, *states, *tensors)):
        g = next(got) if leaf is not None else None
        g = torch.zeros_like(like) if g is None else g
        if g.numel() and g.untyped_storage().data_ptr() in seen:  # an op's outputs alias nothing
            g = g.clone()
        seen.add(g.untyped_storage().data_ptr())
        grads.append(g)
    n = len(states)
    return grads[0], grads[1:1 + n], grads[1 + n:]


@stack_backward.register_fake
def _(handle, x, states, tensors, grad_out, grad_finals):
    return x.new_empty(x.shape), [s.new_empty(s.shape) for s in states], [t.new_empty(t.shape) for t in tensors]


def _setup(ctx, inputs, output):
    _, _, _, _, x, states, _, _, tensors = inputs
    ctx.n_states = len(states)
    ctx.out_shape = output[0].shape
    ctx.save_for_backward(output[2], x, *states, *tensors)


def _backward(ctx, grad_out, grad_finals, _grad_handle):
    handle, x, *rest = ctx.saved_tensors
    states, tensors = rest[:ctx.n_states], rest[ctx.n_states:]
    if grad_out is None:
        grad_out = x.new_zeros(ctx.out_shape)
    grad_finals = [s.new_zeros(s.shape) if g is None else g for g, s in zip(grad_finals, states)]
    gx, gs, gt = stack_backward(handle, x, list(states), list(tensors), grad_out, grad_finals)
    return None, None, None, None, gx, gs, None, None, gt


stack.register_autograd(_backward, setup_context=_setup)


def run(module, x: Tensor, states: tuple[Tensor, ...], mask: Tensor | None, lengths: Tensor | None,
        t0: int) -> tuple[Tensor, tuple[Tensor, ...]]:
    """``module._stack(...)`` as one op (while compiling)."""
    tensors = [getattr(module, attr) for attr in _tensors(module)]
    needs = [t.is_floating_point() and t.requires_grad for t in (x, *states, *tensors)]
    device = x.device.type
    amp = str(torch.get_autocast_dtype(device)).removeprefix("torch.") if torch.is_autocast_enabled(device) else ""
    out, finals, _ = stack(module._key, t0, needs, amp, x, list(states), mask, lengths, tensors)
    return out, tuple(finals)
