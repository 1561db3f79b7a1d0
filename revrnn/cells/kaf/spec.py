r"""KAF-gated LSTM and GRU (Scardapane et al., MLSP 2018, arXiv 1807.04065).

A kernel activation function (KAF, official ``kafnets`` code) with a fixed dictionary
``d = linspace(−B, B, D)`` and per-neuron mixing coefficients ``α_n`` (spec §7.1):

.. code-block:: text

    KAF_n(s) = Σ_i α_{n,i} exp( −γ (s − d_i)² ),   γ = 1/(8Δ²),  Δ = d_2 − d_1 = 2B/(D−1)
    g_n(s)   = σ( ½ s + ½ KAF_n(s) )                                   # the gated KAF (spec §7.2)

``g`` replaces σ in the LSTM i, f, o gates and the GRU r, z gates (reset-after, as
torch.nn.GRU); the candidate keeps tanh. Choices where the paper is unverified:

* γ = 1/(8Δ²) as in the official code (the KAF paper's text says 1/(6Δ²)).
* Defaults ``D = 20`` (kafnets) and ``B = 3`` (the Keras/TF/autograd kafnets default; PyTorch
  kafnets uses 4).
* **Init**: kernel ridge regression, ``α = (K + εI)⁻¹ f(d)``, ``K_ij = exp(−γ(d_i − d_j)²)``,
  ε = 1e-4 (PyTorch kafnets), the same vector for every neuron, with target **f = identity**.
  Spec §7.2 marks identity-vs-sigmoid unverified; the identity makes ``KAF(s) ≈ s`` so
  ``g(s) ≈ σ(s)`` on [−B, B] and the cell starts as the plain LSTM/GRU. With B = 3, D = 20 the
  fit error is ``max |KAF(s) − s| = 1.20e-2`` on [−3, 3] (at the edges) and
  ``max |g(s) − σ(s)| = 3.1e-4``.
* float16/bfloat16: the KAF sums are done in float32 (see :func:`kaf`); keep ``kaf_alpha``
  in float32 (e.g. autocast) for the full accuracy of the fit.
* Outside the dictionary the Gaussians vanish, so ``g(s) → σ(s/2)``: the gate still saturates
  (a pure ``σ(KAF(s))`` would tend to ½). Just outside the edge it wobbles (``g(4) ≈ 0.94``
  against ``σ(4) = 0.982`` for B = 3).

Parameters added to the LSTM's/GRU's: ``kaf_alpha`` (gates·H, D) — rows i, f, o (LSTM) or
r, z (GRU), H each — and the buffer ``kaf_dict`` (D) holding ``d``.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from ..base import ParamSpec, Params, check_number, check_positive
from ..gru.spec import GRUCell
from ..lstm.spec import LSTMCell

#: Ridge of the kernel-ridge-regression init (PyTorch kafnets).
KRR_EPS = 1e-4


def kaf_gamma(size: int, bound: float) -> float:
    """``γ = 1/(8Δ²)`` with ``Δ = 2·bound/(size − 1)`` (official kafnets rule)."""
    delta = 2.0 * bound / (size - 1)
    return 1.0 / (8.0 * delta * delta)


def _kaf(s: Tensor, alpha: Tensor, d: Tensor, gamma: float) -> Tensor:
    dt = torch.promote_types(s.dtype, torch.float32)
    return (torch.exp(-gamma * (s.to(dt)[..., None] - d.to(dt)).square()) * alpha.to(dt)).sum(-1)


def kaf(s: Tensor, alpha: Tensor, d: Tensor, gamma: float) -> Tensor:
    """``KAF_n(s) = Σ_i α_{n,i} exp(−γ (s − d_i)²)`` for ``s`` (..., N), ``alpha`` (N, D), ``d`` (D).

    Computed in at least float32: the identity fit has large alternating α (|α| up to 29 for
    B = 3, D = 20), whose sum loses ~0.4 in bfloat16 arithmetic (0.04 with bfloat16 α summed
    in float32).
    """
    return _kaf(s, alpha, d, gamma).to(s.dtype)


def kaf_gate(s: Tensor, alpha: Tensor, d: Tensor, gamma: float) -> Tensor:
    """The gated KAF ``σ(½ s + ½ KAF(s))`` (in at least float32, returned in ``s``'s dtype)."""
    return torch.sigmoid(0.5 * (s + _kaf(s, alpha, d, gamma))).to(s.dtype)


def krr_alpha(d: Tensor, gamma: float, target: Callable[[Tensor], Tensor] | None = None,
              eps: float = KRR_EPS) -> Tensor:
    """``α = (K + εI)⁻¹ target(d)``, target the identity by default (solved in float64,
    returned in ``d``'s dtype)."""
    d64 = d.detach().to(torch.float64)
    K = torch.exp(-gamma * (d64[:, None] - d64).square())
    eye = torch.eye(len(d64), dtype=torch.float64, device=d.device)
    alpha = torch.linalg.solve(K + eps * eye, d64 if target is None else target(d64))
    return alpha.to(d.dtype)


class KAFGates:
    """Mixin adding per-neuron KAF gates to a cell with ``kaf_gates`` sigmoid gates of H units
    (it replaces the cell's :meth:`gate` hook and extends its parameters and init)."""

    kaf_gates: int

    def _init_kaf(self, kaf_size: int, kaf_range: float) -> None:
        check_positive(kaf_size=kaf_size)
        if kaf_size < 2:
            raise ValueError(f"kaf_size must be at least 2, got {kaf_size}")
        self.kaf_size, self.kaf_range = kaf_size, check_number("kaf_range", kaf_range)
        self.gamma = kaf_gamma(kaf_size, self.kaf_range)

    def param_specs(self) -> list[ParamSpec]:
        return super().param_specs() + [
            ParamSpec("kaf_alpha", (self.kaf_gates * self.hidden_size, self.kaf_size)),
            ParamSpec("kaf_dict", (self.kaf_size,), trainable=False)]

    def reset_parameters(self, p: Params) -> None:
        """The base cell's init; ``kaf_dict = linspace(−B, B, D)``; every row of ``kaf_alpha``
        = the KRR identity fit."""
        super().reset_parameters(p)
        B = self.kaf_range
        p["kaf_dict"].copy_(torch.linspace(-B, B, self.kaf_size, dtype=torch.float64))
        p["kaf_alpha"].copy_(krr_alpha(p["kaf_dict"], self.gamma).expand_as(p["kaf_alpha"]))

    def gate(self, p: Params, s: Tensor, index: int) -> Tensor:
        """The KAF gate of sigmoid gate number ``index`` (rows ``index·H ... (index+1)·H``)."""
        H = self.hidden_size
        return kaf_gate(s, p["kaf_alpha"][index * H:(index + 1) * H], p["kaf_dict"], self.gamma)


class KAFLSTMCell(KAFGates, LSTMCell):
    """LSTM whose i, f, o gates are gated KAFs; otherwise :class:`LSTMCell` (projection included)."""

    name = "kaf_lstm"
    kaf_gates = 3

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, proj_size: int = 0,
                 kaf_size: int = 20, kaf_range: float = 3.0):
        super().__init__(input_size, hidden_size, bias, proj_size)
        self._init_kaf(kaf_size, kaf_range)


class KAFGRUCell(KAFGates, GRUCell):
    """Reset-after GRU (torch.nn.GRU) whose r, z gates are gated KAFs.

    Parameters, projection and step are :class:`GRUCell`'s (variant 0, reset-after).
    """

    name = "kaf_gru"
    kaf_gates = 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, kaf_size: int = 20,
                 kaf_range: float = 3.0):
        super().__init__(input_size, hidden_size, bias, reset_after=True, variant=0)
        self._init_kaf(kaf_size, kaf_range)
