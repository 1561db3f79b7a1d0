r"""g-LSTM — the Gaussian-gated LSTM (Thornton, Anumula, Liu; arXiv 1901.07334).

No official code exists; the equations follow spec §6 (Phased-LSTM template, Gaussian time gate):

.. code-block:: text

    k_{t,n} = exp( -(t - μ_n)² / (2 σ_n²) ),  set to 0 where k_{t,n} < gate_threshold
    ĥ_t, ĉ_t = the LSTM update from (x_t, h_{t-1}, c_{t-1})      # LSTMCell.cell_update
    c_t = k_t ⊙ ĉ_t + (1 − k_t) ⊙ c_{t-1}
    h_t = k_t ⊙ ĥ_t + (1 − k_t) ⊙ h_{t-1}

Choices where the paper is unverified (spec §11):

* **2σ² form** (the σ²-without-2 reading differs only by reparametrising σ).
* **t** is the step index in processing order, 0-based: for the reverse direction of a
  bidirectional layer t = 0 is the *last* valid element of each sequence (``t`` counts steps
  from the end), also for PackedSequence input.
* **Threshold.** ``k < gate_threshold`` is set to exactly 0 and such neuron-steps are a
  ``torch.where`` pass-through, so closed neurons keep ``h`` and ``c`` bit-exactly and need
  nothing stored. Default 1e-3 (the leak of Phased LSTM, same lab): a neuron is open for
  ``|t − μ| < σ·sqrt(2 ln 1000) ≈ 3.72σ``. The gate is discontinuous at the threshold and closed
  neuron-steps give μ, σ no gradient; ``gate_threshold=0`` keeps the full Gaussian tails (a
  gate is then closed only where ``exp`` underflows).
* **σ → 0 guard**: the variance is ``max(σ², SIGMA_MIN²)`` with ``SIGMA_MIN = 1e-3`` steps
  (σ may take either sign; only σ² enters). Below it the gate is a delta at ``t = μ`` and σ gets
  no gradient — no 0/0.
* **Init** (``t_max`` = the sequence length trained on): ``μ ~ U(0, t_max)``,
  ``σ = sigma_fraction · t_max`` with ``sigma_fraction = 0.1`` by default; the LSTM weights keep
  torch.nn's ``U(±1/sqrt(H))``. With the defaults a neuron is open on a window of 74% of
  ``t_max`` around μ; over a length-``t_max`` sequence about 61% of the neuron-steps are open
  (``2a − a²`` with ``a = 0.372``), and the mean openness (budget) is about 0.23.
* **Budget term** (:meth:`GLSTMCell.budget`): ``(1/(T·H)) Σ_{t<T} Σ_n k_{t,n}``, the mean gate
  openness in [0, 1], independent of T and H so that λ transfers between sizes; add
  ``λ·budget`` to the loss. The "number of computes" is :meth:`GLSTMCell.open_fraction`, the
  fraction of (t, n) with ``k > 0`` (a dense LSTM is 1).

Gradients (from autograd): ``∂k/∂μ = k (t − μ)/σ²``, ``∂k/∂σ = k (t − μ)²/σ³``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import ParamSpec, Params, State, check_number
from ..lstm.spec import LSTMCell
from .sparse import gated_projection, use_sparse

#: The smallest |σ| (in steps) used in the gate; see the module docstring.
SIGMA_MIN = 1e-3


class GLSTMCell(LSTMCell):
    """LSTM with a learned per-neuron Gaussian time gate; see the module docstring.

    Parameters: those of :class:`LSTMCell` (no projection) plus ``mu`` (H) and ``sigma`` (H),
    in steps. State ``(h, c)``.
    """

    name = "glstm"
    reads_time = True

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, *, t_max: float,
                 sigma_fraction: float = 0.1, gate_threshold: float = 1e-3):
        super().__init__(input_size, hidden_size, bias)
        self.t_max = check_number("t_max", t_max)
        self.sigma_fraction = check_number("sigma_fraction", sigma_fraction)
        self.gate_threshold = check_number("gate_threshold", gate_threshold, strict=False)
        if self.gate_threshold >= 1:
            raise ValueError(f"gate_threshold must be < 1, got {gate_threshold!r}")

    def param_specs(self) -> list[ParamSpec]:
        H = self.hidden_size
        return super().param_specs() + [ParamSpec("mu", (H,)), ParamSpec("sigma", (H,))]

    def reset_parameters(self, p: Params) -> None:
        """LSTM weights as torch.nn; ``μ ~ U(0, t_max)``, ``σ = sigma_fraction · t_max``."""
        super().reset_parameters(p)
        p["mu"].uniform_(0.0, self.t_max)
        p["sigma"].fill_(self.sigma_fraction * self.t_max)

    def time_gate(self, p: Params, t: int | Tensor) -> Tensor:
        """``k`` at step(s) ``t``: (H,) for an int, (*t.shape, H) for a tensor of steps."""
        mu, sigma = p["mu"], p["sigma"]
        if isinstance(t, Tensor):
            t = t.to(mu.dtype)[..., None]
        var = sigma.square().clamp_min(SIGMA_MIN ** 2)
        z = -(t - mu).square() / (2 * var)
        if self.gate_threshold > 0:
            # a gate is closed below log(threshold) whatever exp gives there: clamping a little
            # lower changes no gate and keeps exp off its slow underflow path (narrow gates put
            # most exponents far below -100)
            z = z.clamp_min(math.log(self.gate_threshold) - 1)
        k = torch.exp(z)
        if self.gate_threshold > 0:
            k = torch.where(k < self.gate_threshold, torch.zeros((), dtype=k.dtype, device=k.device), k)
        return k

    def project_steps(self, p: Params, x: Tensor, mask: Tensor | None, training: bool, t0: int,
                      backend) -> Tensor:
        """On a backend's sparse path (its ``glstm_sparse`` setting, :mod:`.sparse`), the gates'
        columns of the open unit-steps only (:func:`.sparse.gated_projection`); else dense."""
        if getattr(backend, "glstm_sparse", "never") != "never" and not torch.is_autocast_enabled(x.device.type):
            with torch.no_grad():
                k = self.time_gate(p, torch.arange(t0, t0 + x.shape[0], device=x.device))
            if use_sparse(backend, k):
                bias = p["bias_ih"] + p["bias_hh"] if self.bias else None
                xp = gated_projection(x, p["weight_ih"], bias, k)
                if xp is not None:
                    return xp
        return self.project(p, x, mask, training)

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        h, c = state
        k = self.time_gate(p, t)
        h_new, c_new = self.cell_update(p, xp, h, c)
        open_ = k > 0
        return (torch.where(open_, k * h_new + (1 - k) * h, h),
                torch.where(open_, k * c_new + (1 - k) * c, c))

    def budget(self, p: Params, T: int) -> Tensor:
        """``(1/(T·H)) Σ_{t<T, n} k_{t,n}``: differentiable in μ and σ."""
        return self.time_gate(p, torch.arange(T, device=p["mu"].device)).mean()

    def open_fraction(self, p: Params, T: int) -> float:
        """Fraction of the T·H neuron-steps whose gate is open (``k > 0``)."""
        with torch.no_grad():
            return (self.time_gate(p, torch.arange(T, device=p["mu"].device)) > 0).double().mean().item()


def time_gate_grads(p: Params, t0: int, k: Tensor, dk: Tensor) -> dict[str, Tensor]:
    """Gradients of ``mu`` and ``sigma`` from those of the time gates ``k`` (K, H) of steps
    ``t0 .. t0 + K - 1``, as the backends' glue computes them:
    ``∂k/∂μ = k (t − μ)/v`` and ``∂k/∂σ = k (t − μ)² σ / v²`` with ``v = max(σ², SIGMA_MIN²)``
    (zero where the clamp holds, and where the gate is closed since k = 0 there)."""
    mu, sigma = p["mu"], p["sigma"]
    t = torch.arange(t0, t0 + k.shape[0], device=k.device, dtype=k.dtype)[:, None]
    s = sigma.to(k.dtype)
    var = s.square()
    v = var.clamp_min(SIGMA_MIN ** 2)
    d = t - mu.to(k.dtype)
    g = dk * k
    dsigma = (g * d.square() / v.square()).sum(0) * s * (var >= SIGMA_MIN ** 2)
    return {"mu": (g * d / v).sum(0).to(mu.dtype), "sigma": dsigma.to(sigma.dtype)}
