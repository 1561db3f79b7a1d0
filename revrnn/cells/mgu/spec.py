"""MGU, the minimal gated unit (Zhou et al. 2016, arXiv 1603.09420), and the Heck & Salem
2017 gate variants MGU1/2/3 (arXiv 1701.03452).

Orientation is the paper's: ``f`` is an *update* gate, ``h' = (1 - f) h + f n``, and the same
``f`` resets the recurrent input of the candidate before the recurrent matrix:
``n = tanh(W_h x + U_h (f ⊙ h) + b_h)``. (pytorch-kaldi's ``minimalGRU`` resets with the
keep gate instead; that is a different cell and is not implemented here.)
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..base import CellSpec, ParamSpec, Params, State, flat_linear, linear
from ..gru.spec import GATE_TERMS, check_variant


class MGUCell(CellSpec):
    """Minimal gated unit::

        f  = σ(W_f x + U_f h + b_f)           (variant 0)
        n  = tanh(W_h x + U_h (f ⊙ h) + b_h)
        h' = (1 - f) ⊙ h + f ⊙ n

    Heck & Salem's variants change the gate only (the candidate is unchanged):

    * MGU1: ``f = σ(U_f h + b_f)`` — no input term;
    * MGU2: ``f = σ(U_f h)`` — no input term, no bias;
    * MGU3: ``f = σ(b_f)`` — bias only, a per-unit constant: the cell is a leaky tanh RNN.

    Parameters follow :class:`~revrnn.cells.gru.GRUCell`'s layout with one gate instead of two.
    ``variant=0`` (rows ordered f, n): ``weight_ih`` (2H, I), ``weight_hh`` (2H, H),
    ``bias_ih`` (2H), ``bias_hh`` (2H) — torch-style double biases, so the count is exactly 2/3
    of torch.nn.GRU's. Reset-before lets both biases fold into the time-parallel projection.
    Variants 1–3: ``weight_ih`` (H, I), ``bias_ih`` (H) and ``bias_hh`` (H) belong to the
    candidate only; ``weight_hh`` is (2H, H) (variants 1, 2) or the candidate's (H, H)
    (variant 3); ``bias_gates`` (H) is ``b_f`` of variants 1 and 3. ``bias=False`` drops
    ``bias_ih``/``bias_hh`` and keeps ``bias_gates`` (as GRUCell does; MGU3's gate would
    otherwise be the constant 1/2). Initialisation: torch.nn's U(±1/√H) for every tensor.

    Per step: two dependent GEMMs (``U_f h``, then ``U_h (f ⊙ h)``); one for MGU3.
    """

    name = "mgu"
    #: sigmoid gates (f) before the candidate
    num_gates = 1

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, variant: int = 0):
        super().__init__(input_size, hidden_size)
        self.bias = bias
        self.variant = check_variant(variant)
        self.terms = GATE_TERMS[variant]

    def param_specs(self) -> list[ParamSpec]:
        H, I = self.hidden_size, self.input_size
        rows_ih = 2 * H if "x" in self.terms else H
        rows_hh = 2 * H if "h" in self.terms else H
        specs = [ParamSpec("weight_ih", (rows_ih, I), recurrent=False),
                 ParamSpec("weight_hh", (rows_hh, H))]
        if self.bias:
            specs += [ParamSpec("bias_ih", (rows_ih,), recurrent=False),
                      ParamSpec("bias_hh", (rows_ih,), recurrent=False)]
        if "x" not in self.terms and "bias" in self.terms:
            specs.append(ParamSpec("bias_gates", (H,)))
        return specs

    def project(self, p: Params, x: Tensor, mask: Tensor | None, training: bool) -> Tensor:
        bias = p["bias_ih"] + p["bias_hh"] if self.bias else None
        return flat_linear(x, p["weight_ih"], bias)

    def gate_bias(self, p: Params) -> Tensor | None:
        """The bias added to the gate inside the step: ``bias_gates`` (variants 1 and 3), if any."""
        return p.get("bias_gates")

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        (h,) = state
        H = self.hidden_size
        w_hh = p["weight_hh"]
        f = 0
        if "x" in self.terms:
            f, xp = xp[:, :H], xp[:, H:]
        if "h" in self.terms:
            f = f + linear(h, w_hh[:H])
        bias = self.gate_bias(p)
        if bias is not None:
            f = f + bias
        f = torch.sigmoid(f)
        n = torch.tanh(xp + linear(f * h, w_hh[-H:]))
        return ((1 - f) * h + f * n,)
