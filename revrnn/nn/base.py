"""The module side shared by every revrnn recurrent layer stack.

It owns the parameters of each layer and direction under torch.nn's names
(``weight_ih_l0``, ``bias_hh_l1_reverse`` ...), validates input like torch.nn, handles
batch_first, unbatched and PackedSequence input, runs each layer and direction through the
sequence engine, and applies dropout between layers.
"""
from __future__ import annotations

import contextlib
import numbers
import warnings
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import stack_op
from ..backends import check_name, resolve
from ..cells.base import CellSpec, Params
from ..engine import MEMORY, Plan, check_memory, run_sequence
from ..schedule import ScheduleCost, binomial_cost, chunk_length, fixed_cost


def _check_type(name: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise TypeError(f"{name} should be of type {kind.__name__}, got: {type(value).__name__}")


class RecurrentBase(nn.Module):
    """A stack of ``num_layers`` recurrent layers of one cell, optionally bidirectional.

    Subclasses pass ``make_cell(input_size)`` returning the cell spec of a layer whose input
    has ``input_size`` features. Extra keywords common to every revrnn module:

    * ``backend`` — ``"auto"`` (default), ``"reference"``, ``"triton"``, ``"cuda"`` or ``"cpu"``;
    * ``memory`` — ``"store"`` (full BPTT, default) or ``"recompute"`` (states kept every
      ``checkpoint_every`` steps, √T by default, and recomputed in backward);
    * ``checkpoint_slots`` — with ``"recompute"``, a memory budget instead of fixed chunks: at
      most this many states per layer and direction are kept at once, and steps are re-run
      following the binomial (revolve) schedule, the fewest re-runs for that budget.
      :meth:`checkpoint_schedule` reports what it costs.
    """

    #: accepted values of ``memory``, the first is the default
    memory_modes: tuple[str, ...] = MEMORY

    def __init__(self, make_cell: Callable[[int], CellSpec], input_size: int, hidden_size: int,
                 num_layers: int = 1, bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, *, backend: str = "auto",
                 memory: str = "store", checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             f"probability of an element being zeroed, got {dropout!r}")
        if dropout > 0 and num_layers == 1:
            warnings.warn("dropout option adds dropout after all but last recurrent layer, so non-zero "
                          f"dropout expects num_layers greater than 1, but got dropout={dropout} and "
                          f"num_layers={num_layers}", stacklevel=3)
        _check_type("bias", bias, bool)
        _check_type("batch_first", batch_first, bool)
        _check_type("bidirectional", bidirectional, bool)
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            _check_type(name, value, int)
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero, got {value}")
        check_name(backend)
        check_memory(memory, checkpoint_every, self.memory_modes, checkpoint_slots)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.bidirectional = bias, batch_first, bidirectional
        self.dropout = float(dropout)
        self.backend, self.memory, self.checkpoint_every = backend, memory, checkpoint_every
        self.checkpoint_slots = checkpoint_slots
        self.num_directions = 2 if bidirectional else 1

        factory = {"device": device, "dtype": dtype}
        self.cells: list[CellSpec] = []
        self._names: list[dict[str, str]] = []  # per layer-direction: spec name -> attribute name
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else None
            for direction in range(self.num_directions):
                if layer_input is None:
                    layer_input = self.cells[-1].output_size * self.num_directions
                cell = make_cell(layer_input)
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                names = {}
                for spec in cell.param_specs():
                    attr = spec.name + suffix
                    tensor = torch.empty(spec.shape, **factory)
                    if spec.trainable:
                        self.register_parameter(attr, nn.Parameter(tensor))
                    else:
                        self.register_buffer(attr, tensor)
                    names[spec.name] = attr
                self.cells.append(cell)
                self._names.append(names)
        self._given: dict[str, Tensor] | None = None
        self._key = stack_op.register(self)
        self.reset_parameters()

    # -- parameters -----------------------------------------------------------------------
    def cell_params(self, index: int) -> Params:
        """The tensors of layer-direction ``index`` (= layer * num_directions + direction)."""
        given = self._given or {}
        return {name: given[attr] if attr in given else getattr(self, attr) for name, attr in self._names[index].items()}

    @contextlib.contextmanager
    def using(self, tensors: dict[str, Tensor]):
        """Run with ``tensors`` (attribute name -> tensor, the layers' parameters) in place of the
        module's own (:mod:`revrnn.stack_op` hands in its inputs)."""
        self._given = tensors
        try:
            yield
        finally:
            self._given = None

    def __setstate__(self, state) -> None:  # a copy or an unpickled module is a module of its own
        super().__setstate__(state)
        self._given = None
        self._key = stack_op.register(self)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for i, cell in enumerate(self.cells):
                cell.reset_parameters(self.cell_params(i))

    def checkpoint_schedule(self, T: int) -> ScheduleCost | None:
        """What ``memory="recompute"`` costs per layer and direction on ``T`` steps: states kept,
        residual steps held, step evaluations; ``None`` for ``store``."""
        if self.memory != "recompute":
            return None
        if self.checkpoint_slots is not None:
            return binomial_cost(T, self.checkpoint_slots)
        return fixed_cost(T, chunk_length(self.memory, T, self.checkpoint_every))

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return self.cells[0].state_sizes

    @property
    def _param_dtype(self) -> torch.dtype:
        return next(iter(self.cell_params(0).values())).dtype

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for key, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                             ("bidirectional", False), ("backend", "auto"), ("memory", self.memory_modes[0]),
                             ("checkpoint_every", None), ("checkpoint_slots", None)):
            if getattr(self, key) != default:
                s += f", {key}={getattr(self, key)!r}"
        return s

    # -- forward --------------------------------------------------------------------------
    def forward(self, input: Tensor | PackedSequence, hx: Tensor | tuple[Tensor, ...] | None = None, t0: int = 0):
        """As torch.nn's; ``t0`` is the index of the input's first step in a longer sequence (a
        stream's chunk, :func:`revrnn.stream_backward`), for cells whose step depends on it."""
        packed = isinstance(input, PackedSequence)
        name = type(self).__name__
        if not isinstance(t0, int) or isinstance(t0, bool) or t0 < 0:
            raise ValueError(f"{name}: t0 must be a non-negative int, got {t0!r}")
        if t0 and self.bidirectional:
            raise ValueError(f"{name}: t0 must be 0 for a bidirectional module (its reverse direction "
                             f"reads the sequence from its end), got {t0}")
        if packed:
            sorted_indices = input.sorted_indices
            x, lengths = pad_packed_sequence(input)  # original batch order, (T, B, I)
            lengths = lengths.to(x.device)
            batched = True
        else:
            if not isinstance(input, Tensor):
                raise TypeError(f"{name}: input must be a Tensor or PackedSequence, got {type(input).__name__}")
            if input.dim() not in (2, 3):
                raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D instead")
            batched = input.dim() == 3
            x = input if batched else input.unsqueeze(1 if not self.batch_first else 0)
            if self.batch_first:
                x = x.transpose(0, 1)
            lengths = None
        self._check_input(x)
        T = x.shape[0]
        states = self._initial_states(hx, x, batched)
        mask = None
        if lengths is not None:
            mask = torch.arange(T, device=x.device)[:, None] < lengths[None, :]

        if torch.compiler.is_compiling():  # one op, not the steps unrolled into the graph
            layer_in, state_n = stack_op.run(self, x, states, mask, lengths, t0)
        else:
            layer_in, state_n = self._stack(x, states, mask, lengths, t0)
        if packed:
            output = repack(layer_in, lengths, sorted_indices, input)
        else:
            output = layer_in.transpose(0, 1) if self.batch_first else layer_in
            if not batched:
                output = output.squeeze(1 if not self.batch_first else 0)
                state_n = tuple(s.squeeze(1) for s in state_n)
        return output, state_n[0] if len(state_n) == 1 else state_n

    def _stack(self, x: Tensor, states: tuple[Tensor, ...], mask: Tensor | None,
               lengths: Tensor | None, t0: int = 0) -> tuple[Tensor, tuple[Tensor, ...]]:
        """Run every layer and direction on ``x`` (T, B, I), whose first step is step ``t0``:
        the top layer's output (T, B, F) and the final states, each (layers · directions, B, size)."""
        finals: list[tuple[Tensor, ...]] = []
        layer_in = x
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_in = nn.functional.dropout(layer_in, self.dropout, True)
            outs = []
            for direction in range(self.num_directions):
                index = layer * self.num_directions + direction
                seq = layer_in if direction == 0 else reverse_padded(layer_in, lengths)
                m = mask if direction == 0 or mask is None else reverse_padded(mask, lengths)
                out, final = self._run(index, seq, tuple(s[index] for s in states), m, t0)
                outs.append(out if direction == 0 else reverse_padded(out, lengths))
                finals.append(final)
            layer_in = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)
        return layer_in, tuple(torch.stack([f[k] for f in finals]) for k in range(len(self.state_sizes)))

    def _run(self, index: int, x: Tensor, state: tuple[Tensor, ...], mask: Tensor | None, t0: int = 0):
        cell = self.cells[index]
        p = self.cell_params(index)
        backend = resolve(self.backend, cell, x.device, x.dtype)
        recurrent = {spec.name: p[spec.name] for spec in cell.param_specs() if spec.recurrent}
        plan = Plan(cell=cell, backend=backend, memory=self.memory,
                    checkpoint_every=self.checkpoint_every, checkpoint_slots=self.checkpoint_slots, mask=mask,
                    extras=cell.extras(p, x.shape[1], x, self.training), t0=t0)
        if backend.takes_input(cell, p, x, t0):  # the backend projects inside its loop
            plan.takes_input = True
            return run_sequence(plan, x, state, p)
        if self.memory == "recompute" and cell.rowwise_projection:  # chunk-wise projection
            training = self.training
            plan.project = lambda q, xs, s, e: cell.project_steps(q, xs, None if mask is None else mask[s:e],
                                                                  training, t0 + s, backend)
            plan.step_names = tuple(recurrent)
            return run_sequence(plan, x, state, p)
        return run_sequence(plan, cell.project_steps(p, x, mask, self.training, t0, backend), state, recurrent)

    def _check_input(self, x: Tensor) -> None:
        dtype, device = self._param_dtype, next(iter(self.cell_params(0).values())).device
        if x.dtype != dtype:
            raise ValueError(f"RNN input dtype ({x.dtype}) does not match weight dtype ({dtype}). "
                             f"Convert input: input.to({dtype}), or convert model: model.to({x.dtype})")
        if x.device != device:
            raise RuntimeError(f"{type(self).__name__}: input is on {x.device} but the parameters are "
                               f"on {device}; move one of them with .to()")
        if self.input_size != x.size(-1):
            raise RuntimeError("input.size(-1) must be equal to input_size. "
                               f"Expected {self.input_size}, got {x.size(-1)}")
        if x.shape[0] == 0:
            raise RuntimeError("Expected sequence length to be larger than 0 in RNN")

    def _initial_states(self, hx, x: Tensor, batched: bool) -> tuple[Tensor, ...]:
        n, B = len(self.state_sizes), x.shape[1]
        LD = self.num_layers * self.num_directions
        if hx is None:
            init = self.cells[0].initial_state(B * LD, x)
            return tuple(s.view(LD, B, s.shape[-1]) for s in init)  # -1 is ambiguous when B = 0
        hx = (hx,) if isinstance(hx, Tensor) else tuple(hx)
        if len(hx) != n:
            raise RuntimeError(f"{type(self).__name__}: expected a state of {n} tensor(s), got {len(hx)}")
        names = self.cells[0].state_names
        for k, h in enumerate(hx):
            if not isinstance(h, Tensor):
                raise TypeError(f"{names[k]} must be a Tensor, got {type(h).__name__}")
        want_dim = 3 if batched else 2
        if any(h.dim() != want_dim for h in hx):
            kind = "batched 3-D" if batched else "unbatched 2-D"
            got = f"{hx[0].dim()}-D tensor" if n == 1 else f"({', '.join(f'{h.dim()}-D' for h in hx)}) tensors"
            raise RuntimeError(f"For {kind} input, {' and '.join(names)} should also be {want_dim}-D but got {got}")
        out = []
        for k, (h, size) in enumerate(zip(hx, self.state_sizes)):
            if not batched:
                h = h.unsqueeze(1)
            expected = (LD, B, size)
            if tuple(h.shape) != expected:
                prefix = "Expected hidden size" if n == 1 else f"Expected hidden[{k}] size"
                raise RuntimeError(f"{prefix} {expected}, got {list(h.shape)}")
            want = self.cells[0].state_dtype(x.dtype)
            if h.dtype != want:
                raise ValueError(f"{names[k]} dtype ({h.dtype}) does not match the expected state dtype ({want})")
            if h.device != x.device:
                raise RuntimeError(f"{names[k]} is on {h.device} but input is on {x.device}")
            out.append(h)
        return tuple(out)


def reverse_padded(x: Tensor, lengths: Tensor | None) -> Tensor:
    """Reverse each sequence of ``x`` (T, B, ...) within its length; padding stays in place."""
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device)[:, None]
    idx = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    idx = idx.view(T, -1, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(0, idx)


def repack(out: Tensor, lengths: Tensor, sorted_indices: Tensor | None, like: PackedSequence) -> PackedSequence:
    """Pack ``out`` (T, B, F) with the batch order and batch sizes of ``like``."""
    if sorted_indices is not None:
        out, lengths = out[:, sorted_indices], lengths[sorted_indices]
    data = pack_padded_sequence(out, lengths.cpu(), enforce_sorted=True).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)
