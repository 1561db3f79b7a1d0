"""``saved_per_step``: what one recurrent step saves for backward under full BPTT."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..nn.base import RecurrentBase
from ..nn.reversible import ReversibleBase


@dataclass(frozen=True)
class SavedTensor:
    role: str  # "state" (the step's input state), "input" (its projected input) or "intermediate"
    shape: tuple[int, ...]
    dtype: torch.dtype
    bytes: int


@dataclass(frozen=True)
class StepSaved:
    """Tensors one step saves, and α = their bytes over one hidden state's (B · H · itemsize)."""

    cell: str
    tensors: tuple[SavedTensor, ...]
    state_bytes: int

    @property
    def bytes(self) -> int:
        return sum(t.bytes for t in self.tensors)

    @property
    def alpha(self) -> float:
        return self.bytes / self.state_bytes

    def __str__(self) -> str:
        lines = [f"{self.cell}: one step saves {len(self.tensors)} tensors, {self.bytes} bytes, "
                 f"alpha = {self.alpha:.2f} hidden states"]
        lines += [f"  {t.role:<13} {str(tuple(t.shape)):<16} {str(t.dtype).replace('torch.', ''):<8} {t.bytes:>9}"
                  for t in self.tensors]
        return "\n".join(lines)


def saved_per_step(module: RecurrentBase, batch: int = 1, layer: int = 0) -> StepSaved:
    """List the tensors that one step of ``module``'s layer ``layer`` saves for backward.

    The step runs on random input and state at the module's dtype and device, as full BPTT
    (``memory="store"``) on the ``reference`` backend runs it: the cell's step under autograd.
    Parameters are not counted, views of one storage count once. A compiled backend keeps
    its own residuals instead (the ``cpu`` LSTM keeps the projected input, the gates and both
    states: 10 hidden states per step); :func:`memory_sweep` measures what the backend keeps. ``alpha`` is how many hidden states one step of BPTT costs: BPTT's activation
    memory is about ``alpha · T`` hidden states per layer and direction.
    Reversible modules keep no per-step tensors in ``memory="reversible"``; see their
    ``last_stats`` instead.
    """
    if isinstance(module, ReversibleBase):
        raise TypeError(f"{type(module).__name__} keeps no per-step tensors with memory='reversible'; "
                        "its information buffer is reported in module.last_stats")
    if not isinstance(module, RecurrentBase):
        raise TypeError(f"module must be a revrnn recurrent module, got {type(module).__name__}")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    if not isinstance(layer, int) or not 0 <= layer < len(module.cells):
        raise ValueError(f"layer must be an int in [0, {len(module.cells)}), got {layer!r}")
    cell, p = module.cells[layer], module.cell_params(layer)
    like = next(iter(p.values()))
    x = torch.randn(1, batch, cell.input_size, dtype=like.dtype, device=like.device)
    xp = cell.project(p, x, None, module.training).detach()[0].requires_grad_()
    state = tuple(torch.randn_like(s).requires_grad_() for s in cell.initial_state(batch, x))
    extras = cell.extras(p, batch, x, module.training)
    excluded = {t.untyped_storage().data_ptr() for t in (*p.values(), *extras.values()) if isinstance(t, Tensor)}
    roles = {xp.untyped_storage().data_ptr(): "input", **{s.untyped_storage().data_ptr(): "state" for s in state}}
    seen: dict[int, SavedTensor] = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in excluded and ptr not in seen:
            seen[ptr] = SavedTensor(roles.get(ptr, "intermediate"), tuple(t.shape), t.dtype, storage.nbytes())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = cell.step(p, xp, state, 0, extras)
    del out
    hidden = batch * cell.hidden_size * like.element_size()
    return StepSaved(type(cell).__name__, tuple(seen.values()), hidden)
