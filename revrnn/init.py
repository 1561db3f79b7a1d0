"""Initialisers for recurrent modules."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["chrono_"]


def chrono_(module: nn.Module, t_max: float, generator: torch.Generator | None = None) -> nn.Module:
    """Chrono initialisation (Tallec & Ollivier, ICLR 2018) of every layer and direction, in place.

    Each hidden unit gets a forgetting time drawn uniformly from [2, t_max]:

    * LSTM: ``b_f ~ log U[1, t_max − 1]``, ``b_i = −b_f``, every other bias 0;
    * GRU (torch's keep-gate orientation ``h' = z h + (1 − z) n``): ``b_z ~ +log U[1, t_max − 1]``,
      ``b_r = 0``, candidate biases unchanged.

    torch.nn's modules carry two bias vectors; the value is set on ``bias_ih`` and the matching
    rows of ``bias_hh`` are zeroed, so the effective bias is not doubled. Works on
    :class:`revrnn.nn.LSTM`, :class:`revrnn.nn.GRU` (and their subclasses with the same gate
    layout) and on :class:`torch.nn.LSTM` / :class:`torch.nn.GRU`.

    Args:
        module: the recurrent module; it must have biases.
        t_max: the longest dependency expected, in steps (> 2).
        generator: optional random generator, for reproducibility.
    Returns:
        ``module``.
    """
    from . import nn as revrnn_nn
    from .nn.base import RecurrentBase

    if isinstance(module, RecurrentBase):
        if not module.bias:
            raise ValueError("chrono_ needs a module with bias=True")
        with torch.no_grad():
            for i, cell in enumerate(module.cells):
                if not hasattr(cell, "chrono_"):
                    raise TypeError(f"chrono_ supports LSTM and GRU cells, got {type(cell).__name__}")
                cell.chrono_(module.cell_params(i), t_max, generator)
        return module
    if isinstance(module, (nn.LSTM, nn.GRU)):
        if not module.bias:
            raise ValueError("chrono_ needs a module with bias=True")
        # the cell of revrnn's drop-in twin of the module's class defines the initialisation
        cell = getattr(revrnn_nn, type(module).__name__)(1, module.hidden_size).cells[0]
        with torch.no_grad():
            for layer in range(module.num_layers):
                for suffix in ("", "_reverse")[: 2 if module.bidirectional else 1]:
                    p = {k: getattr(module, f"{k}_l{layer}{suffix}") for k in ("bias_ih", "bias_hh")}
                    cell.chrono_(p, t_max, generator)
        return module
    raise TypeError(f"chrono_ supports LSTM and GRU modules, got {type(module).__name__}")
