"""``revrnn.nn.GLSTM``: the Gaussian-gated LSTM (g-LSTM)."""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..cells.glstm import GLSTMCell
from .base import RecurrentBase


class GLSTM(RecurrentBase):
    r"""Multi-layer g-LSTM (Thornton et al. 2019): an LSTM whose neurons update only while their
    Gaussian time gate ``k_{t,n} = exp(−(t − μ_n)²/(2σ_n²))`` is open.

    Equations, the threshold, the σ guard, init and the meaning of ``t`` (processing order;
    counted from the end for the reverse direction) are documented in :mod:`revrnn.cells.glstm`.
    Parameters per layer and direction: torch.nn.LSTM's plus ``mu_l{k}`` (H) and
    ``sigma_l{k}`` (H), in steps.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
        device, dtype: as in :class:`torch.nn.LSTM`.
        t_max: required; the sequence length the gates are spread over (``μ ~ U(0, t_max)``).
        sigma_fraction: initial ``σ = sigma_fraction · t_max`` (default 0.1).
        gate_threshold: gates below it are exactly 0, so the neuron keeps h and c bit-exactly
            (default 1e-3; 0 keeps the full Gaussian).
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.

    ``forward(input, (h_0, c_0)=None)`` returns ``output, (h_n, c_n)`` as torch.nn.LSTM.
    Add ``λ · module.budget(T)`` to the loss for the computational budget;
    ``module.open_fraction(T)`` is the fraction of neuron-steps that update.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 device: Any = None, dtype: torch.dtype | None = None, *, t_max: float,
                 sigma_fraction: float = 0.1, gate_threshold: float = 1e-3, backend: str = "auto",
                 memory: str = "store", checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        self.t_max, self.sigma_fraction, self.gate_threshold = t_max, sigma_fraction, gate_threshold
        super().__init__(lambda n: GLSTMCell(n, hidden_size, bias, t_max=t_max, sigma_fraction=sigma_fraction,
                                             gate_threshold=gate_threshold),
                         input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots,
                         device=device, dtype=dtype)

    def budget(self, T: int) -> Tensor:
        """Mean gate openness over steps ``0..T-1``, neurons, layers and directions:
        ``(1/(L·D·T·H)) Σ k_{t,n}``; differentiable in every ``mu``/``sigma``."""
        return torch.stack([c.budget(self.cell_params(i), T) for i, c in enumerate(self.cells)]).mean()

    def open_fraction(self, T: int) -> float:
        """Fraction of the neuron-steps (over steps ``0..T-1``, layers, directions) that update."""
        fractions = [c.open_fraction(self.cell_params(i), T) for i, c in enumerate(self.cells)]
        return sum(fractions) / len(fractions)

    @torch.no_grad()
    def rescale_time(self, factor: float) -> None:
        """Stretch every time gate by ``factor`` (``μ`` and ``σ`` times it): the same gates over a
        sequence ``factor`` times as long, as a temporal curriculum needs when it lengthens the
        sequences (the gates live in absolute time)."""
        if not factor > 0:
            raise ValueError(f"factor must be positive, got {factor!r}")
        for i in range(len(self.cells)):
            p = self.cell_params(i)
            p["mu"].mul_(factor)
            p["sigma"].mul_(factor)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", t_max={self.t_max}"
        if self.sigma_fraction != 0.1:
            s += f", sigma_fraction={self.sigma_fraction}"
        return s + (f", gate_threshold={self.gate_threshold}" if self.gate_threshold != 1e-3 else "")
