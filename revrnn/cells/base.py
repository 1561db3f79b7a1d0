"""The cell spec: the one definition of a recurrent cell that every backend implements.

A cell spec holds hyperparameters only. Parameters live in the module that owns the cell
(``revrnn.nn``) so that their names match torch.nn (``weight_ih_l0`` ...). Every method takes
the parameters explicitly as a ``dict`` of tensors, which lets the engine call the step on
detached leaves and rebuild any step's graph on demand.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Params = dict[str, Tensor]
State = tuple[Tensor, ...]


@dataclass(frozen=True)
class ParamSpec:
    """One tensor of a cell: a trainable parameter or, with ``trainable=False``, a buffer."""

    name: str
    shape: tuple[int, ...]
    trainable: bool = True
    # Used by the step (True) or only by the time-parallel input projection (False).
    recurrent: bool = True


class CellSpec:
    """Base class of every cell.

    Subclasses define:

    * :meth:`param_specs` — names and shapes of parameters and buffers;
    * :meth:`reset_parameters` — their initialisation, in place;
    * :meth:`project` — the time-parallel part, everything that touches only ``x``
      (one big GEMM over all steps, batch norm ...), differentiated by ordinary autograd;
    * :meth:`step` — one recurrent step from the projected input and the previous state,
      a pure function of its arguments (no randomness: per-sequence random masks come from
      :meth:`extras`, so that recomputation in backward replays the same step);
    * :attr:`state_sizes` — the state layout; ``state[0]`` is the step's output.
    """

    #: name used in errors and tables
    name: str = "cell"
    #: True if each step's projection depends only on that step's input (no batch
    #: statistics); then ``recompute`` can rebuild projections per chunk instead of keeping them.
    rowwise_projection: bool = True
    #: True if ``step`` reads ``t`` (time-gated cells): a chunk's result then depends on its first
    #: step's index, not only on its tensors (a CUDA graph is captured per index)
    reads_time: bool = False

    def __init__(self, input_size: int, hidden_size: int) -> None:
        self.input_size = input_size
        self.hidden_size = hidden_size

    # -- layout ---------------------------------------------------------------------------
    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size,)

    @property
    def state_names(self) -> tuple[str, ...]:
        """Names of the state tensors in error messages (torch.nn's ``hx``/``cx`` for LSTM)."""
        return ("hx",) if len(self.state_sizes) == 1 else tuple(f"hidden[{k}]" for k in range(len(self.state_sizes)))

    @property
    def output_size(self) -> int:
        return self.state_sizes[0]

    def param_specs(self) -> list[ParamSpec]:
        raise NotImplementedError

    def state_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """dtype the state is carried in for inputs of ``dtype``."""
        return dtype

    # -- initialisation -------------------------------------------------------------------
    def reset_parameters(self, p: Params) -> None:
        """torch.nn's RNN default: every tensor ~ U(-1/sqrt(H), 1/sqrt(H))."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for spec in self.param_specs():
            if spec.trainable:
                torch.nn.init.uniform_(p[spec.name], -bound, bound)

    # -- computation ----------------------------------------------------------------------
    def project(self, p: Params, x: Tensor, mask: Tensor | None, training: bool) -> Tensor:
        """Time-parallel input projection of ``x`` (T, B, I) to (T, B, G).

        ``mask`` (T, B) marks valid steps of variable-length input; cells whose projection
        uses batch statistics must ignore the padded steps.
        """
        raise NotImplementedError

    def project_steps(self, p: Params, x: Tensor, mask: Tensor | None, training: bool, t0: int,
                      backend) -> Tensor:
        """The projection of steps ``t0 ..`` as ``backend``'s steps read it: :meth:`project`,
        unless a cell's steps skip part of it (the g-LSTM's closed unit-steps)."""
        return self.project(p, x, mask, training)

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        """One step: projected input ``xp`` (B, G) and ``state`` at ``t-1`` -> state at ``t``."""
        raise NotImplementedError

    def extras(self, p: Params, batch: int, like: Tensor, training: bool) -> Params:
        """Constant per-sequence tensors of the step (e.g. a recurrent dropout mask)."""
        return {}

    def initial_state(self, batch: int, like: Tensor) -> State:
        dtype = self.state_dtype(like.dtype)
        return tuple(like.new_zeros(batch, n, dtype=dtype) for n in self.state_sizes)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    return torch.nn.functional.linear(x, weight, bias)


def flat_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``linear`` over a (T, B, I) sequence as one (T·B, I) GEMM."""
    T, B, I = x.shape  # sizes, not -1: a batch of 0 rows makes -1 ambiguous
    return linear(x.reshape(T * B, I), weight, bias).reshape(T, B, weight.shape[0])


def check_positive(**values: int) -> None:
    for key, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{key} should be of type int, got: {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{key} must be greater than zero, got {value}")


def check_number(name: str, value: float, low: float = 0.0, strict: bool = True) -> float:
    """``value`` as a float; raises unless it is a finite real number ``> low`` (``>= low``
    when not ``strict``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        raise ValueError(f"{name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


CellFactory = Callable[..., CellSpec]
