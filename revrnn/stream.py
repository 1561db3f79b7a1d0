"""The streamed loss: one exact training step on a sequence whose outputs are never all in memory.

:func:`stream_backward` runs a recurrent model over a sequence chunk by chunk and adds to every
parameter's ``.grad`` the gradient of ``Σ_chunks loss_fn(output of the chunk, t0)`` that
backpropagation through the whole sequence gives. Forward runs the chunks without a graph and
keeps only the state at each chunk's start (and the random-number state there, so that dropout
draws the same masks again); backward walks the chunks in reverse, re-creates each chunk's
outputs from its start state with a graph, applies the loss and backpropagates the chunk, the
gradient of its end state coming from the chunk after it. Inside a chunk the model trains with
its own memory strategy (``store``, ``recompute``, ``reversible`` ...), so memory is the kept
start states (T/K states) plus one chunk of K steps: with the default K = ⌈√T⌉, O(√T) states
and nothing of size T. The cost is one more forward of the sequence, as for checkpointing. The
re-runs leave the module's buffers (running statistics) as the forward left them. Rows of
different lengths stream too (``lengths``: each chunk is packed). On CPU the C heap's free pages
go back to the system after every chunk (:mod:`revrnn.heap`), so the resident set follows the
live memory rather than what glibc retains over thousands of chunks.

The input comes from a :class:`Source`: a tensor (:class:`TensorSource`, or a tensor passed
directly), or anything that can hand out the steps ``s .. e-1`` again on request, e.g. a
generated stream (:class:`NoiseSource`), so that the input need not be in memory either.

The gradients equal those of one call of the model on the whole sequence for every cell whose
projection is row-wise (all but the LiGRU's and LiBRU's batch norm, whose statistics are then
per chunk) and without per-call random draws (the LiGRU's recurrent-dropout mask is drawn per
chunk; dropout between layers is per step and replays exactly).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Callable, Protocol

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import heap
from .nn.base import RecurrentBase
from .schedule import default_every

State = tuple[Tensor, ...]


class Source(Protocol):
    """A sequence that can hand out any of its chunks again: ``len(source)`` steps, and
    ``source.chunk(s, e)`` the steps ``s .. e-1`` as the model takes them (time-major, or batch
    first for a ``batch_first`` model)."""

    def __len__(self) -> int: ...

    def chunk(self, s: int, e: int) -> Tensor: ...


class TensorSource:
    """A tensor as a :class:`Source`: time along dimension 1 if ``batch_first``, else 0; (T, B,
    features) for a recurrent module, or e.g. (T, B) token ids for a model that embeds them."""

    def __init__(self, x: Tensor, batch_first: bool = False) -> None:
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"the input must be a tensor with time and batch dimensions, got {type(x).__name__}"
                             f"{'' if not isinstance(x, Tensor) else f' of {x.dim()} dimensions'}")
        self.x, self.batch_first = x, batch_first

    def __len__(self) -> int:
        return self.x.shape[1 if self.batch_first else 0]

    def chunk(self, s: int, e: int) -> Tensor:
        return self.x[:, s:e] if self.batch_first else self.x[s:e]


class NoiseSource:
    """A generated input, never all in memory: standard normal steps (T, B, features), made on
    request and the same every time they are asked for (blocks of ``block`` steps, each drawn
    from a generator seeded by ``seed`` and its index)."""

    def __init__(self, steps: int, batch: int, features: int, seed: int = 0, block: int = 256,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        for name, value in (("steps", steps), ("batch", batch), ("features", features), ("block", block)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.steps, self.batch, self.features, self.seed, self.block = steps, batch, features, seed, block
        self.device, self.dtype = device, dtype

    def __len__(self) -> int:
        return self.steps

    def chunk(self, s: int, e: int) -> Tensor:
        if not 0 <= s < e <= self.steps:
            raise IndexError(f"steps {s}..{e} outside 0..{self.steps}")
        blocks = []
        for b in range(s // self.block, (e - 1) // self.block + 1):
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
            blocks.append(torch.randn(self.block, self.batch, self.features, generator=g))
        x = torch.cat(blocks) if len(blocks) > 1 else blocks[0]
        first = s // self.block * self.block
        return x[s - first:e - first].to(device=self.device, dtype=self.dtype)


@dataclass
class StreamResult:
    """What :func:`stream_backward` did: the summed loss, the final state (detached, to carry
    into a next window), the gradient of the initial state (None where it was not given or
    needs none) and the number of chunks."""

    loss: float
    state: Tensor | State
    hx_grad: Tensor | State | None
    chunks: int


def _as_tuple(state) -> State | None:
    return None if state is None else (state,) if isinstance(state, Tensor) else tuple(state)


def _as_model(state: State | None, single: bool) -> Tensor | State | None:
    """``state`` in the form the model takes and returns: a tensor for single-state models."""
    return None if state is None else state[0] if single else state


def _rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(saved: tuple, device: torch.device) -> None:
    # copies: torch.set_rng_state reads a view at a storage offset wrongly (torch 2.13 crashes)
    torch.set_rng_state(saved[0].clone())
    if saved[1] is not None:
        torch.cuda.set_rng_state(saved[1].clone(), device)


class _Starts:
    """What the forward pass keeps per chunk: its start state and the random-number state there,
    in buffers allocated once. Small tensors kept one per chunk between each chunk's large
    temporaries would pin the heap: glibc could then return none of the temporaries' memory
    (measured: +280 MiB resident over 316 chunks), so nothing here is allocated per chunk."""

    def __init__(self, n: int) -> None:
        self.n, self.states, self.rng, self.given = n, None, None, [False] * n

    def put(self, i: int, state: State | None, device: torch.device) -> None:
        rng = _rng_state(device)
        if self.rng is None:
            self.rng = [torch.empty((self.n, *r.shape), dtype=r.dtype) if r is not None else None for r in rng]
        for buf, r in zip(self.rng, rng):
            if r is not None:
                buf[i] = r
        if state is not None:
            if self.states is None:
                self.states = [h.new_empty((self.n, *h.shape)) for h in state]
            for buf, h in zip(self.states, state):
                buf[i] = h
            self.given[i] = True

    def get(self, i: int) -> tuple[State | None, tuple]:
        state = tuple(buf[i] for buf in self.states) if self.given[i] else None
        return state, tuple(None if buf is None else buf[i] for buf in self.rng)


class _Runner:
    """One chunk of the model: ``run(x, state, single, s) -> (output, state tuple, single)``, the
    chunk packed by the rows' lengths when they are given."""

    def __init__(self, model: nn.Module, lengths, steps: int) -> None:
        self.model, self.steps = model, steps
        # revrnn modules take the chunk's first step (time-gated cells read it), and so may a
        # model around one; others do not
        self.t0 = isinstance(model, RecurrentBase) or "t0" in inspect.signature(model.forward).parameters
        self.batch_first = bool(getattr(model, "batch_first", False))
        self.lengths = None
        if lengths is not None:
            n = torch.as_tensor(lengths)
            if n.dim() != 1 or n.is_floating_point() or n.is_complex() or n.dtype == torch.bool:
                raise ValueError(f"lengths must be a 1-D tensor or list of ints, got {lengths!r}")
            if n.numel() and (int(n.min()) < 1 or int(n.max()) > steps):
                raise ValueError(f"lengths must lie in [1, {steps}] (the source's steps), got "
                                 f"{n.tolist() if n.numel() <= 16 else f'{int(n.min())} .. {int(n.max())}'}")
            self.lengths = n.to("cpu", torch.int64)
            self.steps = int(n.max()) if n.numel() else steps

    def __call__(self, x: Tensor, state: State | None, single: bool, s: int):
        kwargs = {"t0": s} if self.t0 else {}
        if self.lengths is None:
            out, returned = self.model(x, _as_model(state, single), **kwargs)
            return out, _as_tuple(returned), isinstance(returned, Tensor)
        bdim, tdim = (0, 1) if self.batch_first else (1, 0)
        if x.shape[bdim] != len(self.lengths):
            raise ValueError(f"lengths has {len(self.lengths)} rows, the input {x.shape[bdim]}")
        here = (self.lengths - s).clamp(0, x.shape[tdim])
        rows = here.nonzero().flatten()  # rows not yet ended (never none: steps ends at the longest)
        part = len(rows) < len(here)
        take = rows.to(x.device)
        if part:
            x = x.index_select(bdim, take)
            inner = tuple(h.index_select(1, take) for h in state)  # a chunk after the first: state given
        else:
            inner = state
        packed = pack_padded_sequence(x, here[rows], batch_first=self.batch_first, enforce_sorted=False)
        out, returned = self.model(packed, _as_model(inner, single), **kwargs)
        single = isinstance(returned, Tensor)
        out, _ = pad_packed_sequence(out, batch_first=self.batch_first, total_length=x.shape[tdim])
        returned = _as_tuple(returned)
        if part:  # the ended rows: zeros out, their state carried as it was
            shape = list(out.shape)
            shape[bdim] = len(here)
            out = out.new_zeros(shape).index_copy(bdim, take, out)
            returned = tuple(h.index_copy(1, take, r) for h, r in zip(state, returned))
        return out, returned, single


def stream_backward(model: nn.Module, source: Source | Tensor, loss_fn: Callable[[Tensor, int], Tensor],
                    hx: Tensor | State | None = None, chunk: int | None = None,
                    lengths: Tensor | list[int] | None = None) -> StreamResult:
    """One exact training step of ``model`` on ``source`` without its outputs in memory.

    Args:
        model: a unidirectional recurrent module called as ``model(x_chunk, state) -> (output,
            state)``, e.g. any :mod:`revrnn.nn` module or a torch.nn one; a model whose
            ``forward`` takes ``t0`` (every :mod:`revrnn.nn` module) is told the chunk's first
            step (the g-LSTM's time gates read it).
        source: the input, a :class:`Source` or a tensor (time-major unless the model is
            ``batch_first``).
        loss_fn: ``loss_fn(output, t0)`` -> a scalar tensor for the chunk that starts at step
            ``t0`` (e.g. a linear head and cross-entropy against that chunk's targets); the step's
            loss is their sum.
        hx: the initial state, or None for zeros; its gradient is returned where it requires one.
        chunk: steps per chunk, ⌈√T⌉ by default.
        lengths: each row's length, for rows of different lengths padded to one source (as
            ``pack_padded_sequence`` takes them); the model then sees each chunk packed, steps
            past the longest row are not run, ``loss_fn`` gets the chunk's output with zeros past
            each row's end (as ``pad_packed_sequence`` gives it) and the returned state is each
            row's state at its own last step.

    Gradients are added to the parameters' ``.grad``, as ``loss.backward()`` would.
    """
    if getattr(model, "bidirectional", False):
        raise ValueError("stream_backward needs a unidirectional model: a bidirectional one reads the "
                         "whole sequence from its end")
    if isinstance(source, Tensor):
        source = TensorSource(source, getattr(model, "batch_first", False))
    T = len(source)
    if T < 1:
        raise ValueError(f"the source must have at least one step, got {T}")
    run = _Runner(model, lengths, T)
    T = run.steps
    K = default_every(T) if chunk is None else chunk
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise ValueError(f"chunk must be a positive int or None, got {chunk!r}")
    bounds = [(s, min(s + K, T)) for s in range(0, T, K)]
    given = _as_tuple(hx)
    single = isinstance(hx, Tensor)
    state = None if given is None else tuple(h.detach() for h in given)
    starts = _Starts(len(bounds))
    device = None
    with torch.no_grad():
        for i, (s, e) in enumerate(bounds):
            x = source.chunk(s, e)
            device = x.device
            starts.put(i, state, device)
            _, state, single = run(x, state, single, s)
            if device.type == "cpu":
                heap.release()
    end_rng = _rng_state(device)
    final = state
    # the re-runs below would update running statistics (batch norm) a second time
    buffers = {k: b.clone() for k, b in model.named_buffers()}

    total, grad = 0.0, None
    for i in range(len(bounds) - 1, -1, -1):
        (s, e), (start, rng) = bounds[i], starts.get(i)
        _set_rng_state(rng, device)
        leaves = None if start is None else tuple(h.detach().requires_grad_(h.is_floating_point()) for h in start)
        with torch.enable_grad():
            out, end, _ = run(source.chunk(s, e), leaves, single, s)
            loss = loss_fn(out, s)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                             f"{'' if not isinstance(loss, Tensor) else f' of shape {tuple(loss.shape)}'}")
        tensors, grads = [loss], [None]
        if grad is not None:  # the end state's gradient, from the chunk after this one
            for h, g in zip(end, grad):
                if h.requires_grad and g is not None:
                    tensors.append(h)
                    grads.append(g)
        if loss.requires_grad or len(tensors) > 1:
            keep = [i for i, t in enumerate(tensors) if t.requires_grad]
            torch.autograd.backward([tensors[i] for i in keep], [grads[i] for i in keep])
        total += float(loss.detach())
        grad = None if leaves is None else tuple(h.grad if h.requires_grad else None for h in leaves)
        del out, end, loss, tensors, grads
        if device.type == "cpu":
            heap.release()
    _set_rng_state(end_rng, device)
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(buffers[k])

    hx_grad = None
    if given is not None and grad is not None:
        wanted = [(h, g) for h, g in zip(given, grad) if h.requires_grad and g is not None]
        if wanted:  # into hx's own graph, as backward() would (a leaf's .grad accumulates)
            torch.autograd.backward([h for h, _ in wanted], [g for _, g in wanted])
            hx_grad = _as_model(grad, single)
    return StreamResult(total, _as_model(final, single), hx_grad, len(bounds))
