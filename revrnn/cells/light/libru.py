"""LiBRU, the light Bayesian recurrent unit (Bittar & Garner, ICASSP 2021).

Reference code: idiap/bayesian-recurrence ``bayesian_recurrence/libru.py`` (forms ``probs`` and
``logprobs``; its ``ligru`` form is :class:`~revrnn.cells.ligru.LiGRUCell` and ``geomean`` is
LiGRU with softplus, neither is repeated here).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base import Params, State, linear
from .ligru import LightCell

FORMS = ("probs", "logprobs")


def check_form(form: str) -> str:
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(map(repr, FORMS))}, got {form!r}")
    return form


def log_eps(dtype: torch.dtype) -> float:
    """The ε of :func:`safe_log` for states of ``dtype``."""
    return max(1e-11, torch.finfo(dtype).tiny)


def safe_log(h: Tensor) -> Tensor:
    """``log(max(h, 0) + ε)`` with ``ε = max(1e-11, smallest normal number of h's dtype)``.

    The reference computes ``log(h + 1e-11)``; in float16 1e-11 underflows, ``log(0)`` is -inf
    and the recurrent GEMM turns it into NaN. This is the reference exactly in float32, float64
    and bfloat16 (ε = 1e-11, ``log ε`` = -25.3) and finite in float16 (ε = 2^-14, ``log ε`` =
    -9.7). ε is added rather than used as a lower clamp on ``h`` because states far below ε
    (1e-13 and less) are common from ``h₀ = 0`` at initialisation, where a clamp would change
    the cell; the clamp at 0 only guards against a negative user-given ``h₀``.
    """
    eps = log_eps(h.dtype)
    return (h.clamp_min(0) + eps).log()


class LiBRUCell(LightCell):
    """Light Bayesian recurrent unit, keep-gate orientation. With ``[a_c, a_z] = BN(W x) +
    V g(h)``::

        probs    (g = log):  z = σ(a_z),  c = σ(a_c),         h' = z h + (1 − z) c
        logprobs (g = id):   z = σ(a_z),  c = softplus(a_c),  h' = log(z e^h + (1 − z) e^c)

    ``probs`` (the default) keeps ``h ∈ (0, 1)`` for ``h₀ ∈ [0, 1)``; in floating point
    ``[0, 1]``, since σ rounds to 0 or 1 when saturated (from ``h₀ = 0`` the log feedback is
    ``log 1e-11`` = -25.3 and the first steps often are). ``log h`` is :func:`safe_log`, the
    reference's ``log(h + 1e-11)`` with an ε that does not underflow in float16.
    ``logprobs`` is computed as the weighted log-sum-exp
    ``h' = logaddexp(h − softplus(−a_z), c − softplus(a_z))`` (``log z = −softplus(−a_z)``,
    ``log(1 − z) = −softplus(a_z)``), finite where ``e^h`` or ``e^c`` would overflow; ``h``
    is unbounded. The two forms are **not** equivalent (the reference's docstring says they
    are; ``logprobs`` mixes ``e^{+h}``, i.e. reciprocals of probabilities): they are two cells.

    Default form: ``probs``. The reference constructor defaults to ``logprobs``, but its
    README example and the paper's equations (19a–c, cited by the ``probs`` routine) use
    ``probs``, whose state is bounded.

    Batch norm (as in the reference code, a deliberate reproduction of its quirk): **one**
    BatchNorm of H features normalises both projections, first ``W x`` then ``W_z x``. They
    share γ and β; in training each is normalised with its own batch statistics and the
    running statistics are updated twice per forward, in that order, so in eval both use the
    same blended running statistics. Momentum 0.05.

    Parameters: see :class:`~revrnn.cells.ligru.LightCell` (BN of H features). Init as the
    reference: ``weight_ih`` Xavier-uniform per block, ``weight_hh`` orthogonal blocks.
    """

    name = "libru"
    bn_groups = 2
    init_ih = staticmethod(torch.nn.init.xavier_uniform_)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_norm: bool = True,
                 form: str = "probs"):
        super().__init__(input_size, hidden_size, bias, batch_norm)
        self.form = check_form(form)

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        (h,) = state
        logprobs = self.form == "logprobs"
        feedback = h if logprobs else safe_log(h)
        a_c, a_z = (xp + linear(feedback, p["weight_hh"])).chunk(2, dim=1)
        if logprobs:
            c = F.softplus(a_c)
            return (torch.logaddexp(h - F.softplus(-a_z), c - F.softplus(a_z)),)
        z = torch.sigmoid(a_z)
        return (z * h + (1 - z) * torch.sigmoid(a_c),)  # sum of non-negative terms: no cancellation
