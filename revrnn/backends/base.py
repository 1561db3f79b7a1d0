"""The interface between the sequence engine and a backend.

The engine splits a sequence into chunks of steps and calls a backend once per chunk, so a
backend may run one fused kernel per step (recurrent GEMM + fused pointwise, with the weight
gradients batched over the chunk) or one whole-chunk kernel. Host–device synchronisation
may happen at most once per chunk.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

import torch
from torch import Tensor

from ..cells.base import CellSpec, Params, State
from .graphs import Graphs

if TYPE_CHECKING:
    from ..cells.family import Family


class BackendUnavailable(RuntimeError):
    """A backend cannot run here (not built, no device, no compiler); the message says why."""


@dataclass
class Chunk:
    """Steps ``t0 .. t0 + len(xp) - 1`` of one layer and direction."""

    t0: int
    xp: Tensor  # (K, B, G) projected inputs, or (K, B, I) the layer input where ``is_input``
    mask: Tensor | None  # (K, B) bool, valid steps of variable-length input
    is_input: bool = False  # ``xp`` is the layer input: the runner projects it (Runner.takes_input)


class Backend:
    """A backend runs chunks of steps forward and backward for the cells it supports.

    ``forward_chunk`` returns the chunk's outputs (K, B, H_out), the state after the chunk and,
    when ``keep`` is true, residuals that ``backward_chunk`` consumes: a tuple of tensors
    holding everything it needs to differentiate the chunk without re-running it. ``backward_chunk`` returns the gradients
    of the chunk's projected inputs, of the state before the chunk, and of each recurrent
    parameter (``None`` where a parameter does not require grad).
    """

    name: str = "backend"
    #: True if the steps are plain autograd ops (then ``store`` needs no custom backward).
    autograd_steps: bool = False
    #: device types on which ``auto`` may pick this backend (None: wherever it is available)
    auto_devices: tuple[str, ...] | None = None
    #: whether torch.compile can trace its chunks (``auto`` skips it while compiling if not)
    traceable: bool = True
    #: input dtypes it runs
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.float64)
    #: the families' glue modules it loads (``<family package>.<glue>``); None: its name
    glue: str | None = None
    #: whether ``backward_chunk`` reads the values of ``chunk.xp`` (False: only its shape, dtype
    #: and device, and ``store`` keeps no copy of the projection for backward)
    backward_reads_xp: bool = True

    #: whether its chunks can be captured in CUDA graphs (then ``graphs = True`` turns that on)
    offers_graphs: bool = False

    def __init__(self) -> None:
        self._pickers: dict[type, Callable[[CellSpec], Any]] = {}
        self._graphs_on = False
        self._graphs = Graphs() if self.offers_graphs else None

    @property
    def graphs(self) -> bool:
        """Run chunks on CUDA tensors through CUDA graphs (:mod:`.graphs`); off by default."""
        return self._graphs_on

    @graphs.setter
    def graphs(self, on: bool) -> None:
        if on and not self.offers_graphs:
            raise ValueError(f"backend {self.name!r} does not offer CUDA graphs (the cuda and triton backends do)")
        self._graphs_on = bool(on)

    def load_glue(self, families: tuple[Family, ...]) -> None:
        """Import the glue of every family that has some for this backend (see
        :mod:`revrnn.cells.family`); called once, when the backend is registered."""
        for family in families:
            glue = family.glue(self.glue or self.name)
            if glue is not None:
                pick = glue.runners(self)
                self._pickers.update(dict.fromkeys(family.cells, pick))

    def runner_for(self, cell: CellSpec) -> Any:
        """What runs ``cell`` here (its family's glue), or None if this backend has nothing for it."""
        pick = self._pickers.get(type(cell))
        return None if pick is None else pick(cell)

    def takes_input(self, cell: CellSpec, p: Params, x: Tensor, t0: int) -> bool:
        """Whether a run of ``cell`` on the layer input ``x`` (T, B, I) from step ``t0`` hands
        this backend the input instead of its projection, with every parameter of the cell
        (:meth:`Runner.takes_input`)."""
        runner = self.runner_for(cell)
        return runner is not None and runner.takes_input(cell, p, x, t0)

    def availability(self, device: torch.device) -> str | None:
        """``None`` if the backend can run on ``device``, otherwise the reason it cannot."""
        return None

    def supports(self, cell: CellSpec, dtype: torch.dtype) -> bool:
        """Whether this backend implements ``cell`` for inputs of ``dtype``: a runner from the
        cell's family glue that does not refuse it."""
        runner = self.runner_for(cell)
        return dtype in self.dtypes and runner is not None and runner.refusal(cell) is None

    def unsupported_reason(self, cell: CellSpec, dtype: torch.dtype) -> str | None:
        """Why :meth:`supports` refuses ``cell`` when the cell type itself is implemented (a size
        limit, say), for the error message; None otherwise."""
        runner = self.runner_for(cell)
        return None if runner is None else runner.refusal(cell)

    def forward_chunk(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                      state: State, keep: bool) -> tuple[Tensor, State, Any]:
        runner = self.runner_for(cell)
        with torch.no_grad():
            if self.graphed(chunk):
                return self._graphs.run("forward", cell, lambda c, p, e, s, k: runner.forward(cell, p, e, c, s, k),
                                        chunk, p, extras, state, keep)
            return runner.forward(cell, p, extras, chunk, state, keep)

    def recompute_residuals(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                            state: State) -> Any:
        """Rebuild a chunk's residuals from the state before it (``recompute`` backward)."""
        return self.forward_chunk(cell, p, extras, chunk, state, keep=True)[2]

    def backward_chunk(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                       residuals: Any, grad_out: Tensor, grad_state: State
                       ) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        runner = self.runner_for(cell)
        with torch.no_grad():
            if self.graphed(chunk):
                return self._graphs.run("backward", cell,
                                        lambda c, p, e, r, g, gs: runner.backward(cell, p, e, c, r, g, gs),
                                        chunk, p, extras, residuals, grad_out, grad_state)
            return runner.backward(cell, p, extras, chunk, residuals, grad_out, grad_state)

    def graphed(self, chunk: Chunk) -> bool:
        """Whether this chunk runs through CUDA graphs (:mod:`.graphs`): ``graphs`` set on a
        backend that offers them, on CUDA tensors."""
        return self.graphs and chunk.xp.device.type in self._graphs.devices


class Runner:
    """One family's implementation of the chunk contract on one backend (its glue module's
    ``runners`` hands them out): ``forward`` and ``backward`` as :class:`Backend`'s
    ``forward_chunk`` and ``backward_chunk``."""

    def refusal(self, cell: CellSpec) -> str | None:
        """Why this runner cannot run ``cell`` although its type is implemented (a size limit,
        say); None if it can."""
        return None

    def takes_input(self, cell: CellSpec, p: Params, x: Tensor, t0: int) -> bool:
        """Whether this run (``cell`` with parameters ``p`` on the layer input ``x`` (T, B, I)
        from step ``t0``) should hand the runner ``x`` itself, with every parameter of the cell:
        a runner that projects inside its loop (the g-LSTM's sparse path) then gets chunks with
        ``is_input`` set, and its ``backward`` returns the gradient of ``x`` and of every
        parameter. No by default: the engine projects."""
        return False

    def forward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk, state: State,
                keep: bool) -> tuple[Tensor, State, tuple | None]:
        raise NotImplementedError

    def backward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk, residuals: tuple,
                 grad_out: Tensor, grad_state: State) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        raise NotImplementedError


def weight_grad(dpre: Tensor, operand: Tensor, dtype: torch.dtype) -> Tensor:
    """``Σ_steps dpreᵀ · operand`` as one GEMM: dpre (K, B, G), operand (K, B, H) -> (G, H)."""
    K, B, G = dpre.shape
    return dpre.reshape(K * B, G).t().to(dtype) @ operand.reshape(K * B, operand.shape[-1]).to(dtype)


def bias_sums(cell: CellSpec, p: Params, dpre: Tensor, cols: dict[str, slice]) -> dict[str, Tensor | None]:
    """Gradients of the bias parameters among ``p``: each the sum over steps and rows of the
    ``dpre`` columns given for it."""
    return {name: dpre[..., cols[name]].sum((0, 1)).to(p[name].dtype) if p[name].requires_grad else None
            for name in cols if name in p}
