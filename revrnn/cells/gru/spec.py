"""GRU: reset-after (exactly torch.nn.GRU) or reset-before (Cho et al. v3, Dey & Salem), and the
Dey & Salem gate variants GRU1/2/3.

Orientation is torch's keep gate throughout: ``h' = z h + (1 - z) n``. Dey & Salem write
``h' = (1 - z) h + z n``; the variants only change which terms feed the gates, so they carry
over unchanged.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..base import CellSpec, ParamSpec, Params, State, flat_linear, linear
from ..lstm.spec import chrono_log_uniform

#: Which terms feed the gates, by variant (Dey & Salem 2017; Heck & Salem 2017 for MGU).
GATE_TERMS = {
    0: ("x", "h", "bias"),
    1: ("h", "bias"),
    2: ("h",),
    3: ("bias",),
}


def check_variant(variant: int) -> int:
    if variant not in GATE_TERMS or isinstance(variant, bool):
        raise ValueError(f"variant must be one of 0, 1, 2, 3, got {variant!r}")
    return variant


class GRUCell(CellSpec):
    """Gated recurrent unit.

    ``variant=0`` is the full GRU. Variants 1–3 remove terms from the reset and update gates
    only (the candidate keeps ``W x + U (r h) + b``):

    * GRU1: ``σ(U h + b)`` — no input term;
    * GRU2: ``σ(U h)`` — no input term, no bias;
    * GRU3: ``σ(b)`` — bias only, so the gates are per-unit constants.

    Parameters, for ``variant=0`` those of torch.nn.GRU (rows ordered r, z, n):
    ``weight_ih`` (3H, I), ``weight_hh`` (3H, H), ``bias_ih`` (3H), ``bias_hh`` (3H).
    For variants 1–3 ``weight_ih`` (H, I), ``bias_ih`` (H) and ``bias_hh`` (H) belong to the
    candidate only, ``weight_hh`` is (3H, H) (variants 1, 2) or the candidate's (H, H)
    (variant 3), and ``bias_gates`` (2H, rows r, z) holds the gate bias of variants 1 and 3.
    ``bias=False`` drops ``bias_ih``/``bias_hh``; GRU3 keeps ``bias_gates`` (its gates would
    otherwise be the constant 1/2).
    """

    name = "gru"

    #: sigmoid gates (r, z) before the candidate
    num_gates = 2

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 reset_after: bool = True, variant: int = 0):
        super().__init__(input_size, hidden_size)
        self.bias = bias
        self.reset_after = reset_after
        self.variant = check_variant(variant)
        self.terms = GATE_TERMS[variant]

    def param_specs(self) -> list[ParamSpec]:
        H, I = self.hidden_size, self.input_size
        gates_x = "x" in self.terms
        rows_ih = 3 * H if gates_x else H
        rows_hh = 3 * H if "h" in self.terms else H
        specs = [ParamSpec("weight_ih", (rows_ih, I), recurrent=False),
                 ParamSpec("weight_hh", (rows_hh, H))]
        if self.bias:
            specs.append(ParamSpec("bias_ih", (rows_ih,), recurrent=False))
            # reset-after keeps b_hn inside r * (U_n h + b_hn): a recurrent parameter.
            specs.append(ParamSpec("bias_hh", (3 * H if gates_x else H,), recurrent=self.reset_after))
        if not gates_x and "bias" in self.terms:
            specs.append(ParamSpec("bias_gates", (2 * H,)))
        return specs

    def project(self, p: Params, x: Tensor, mask: Tensor | None, training: bool) -> Tensor:
        bias = None
        if self.bias:
            bias = p["bias_ih"] if self.reset_after else p["bias_ih"] + p["bias_hh"]
        return flat_linear(x, p["weight_ih"], bias)

    def gate_bias(self, p: Params) -> Tensor | None:
        """The bias added to the gates inside the step, if any: ``bias_gates`` (variants 1 and
        3), or the r, z rows of the reset-after GRU's ``bias_hh`` (``bias_ih`` is in the projection)."""
        if "bias_gates" in p:
            return p["bias_gates"]
        if self.bias and self.reset_after and "x" in self.terms:
            return p["bias_hh"][:2 * self.hidden_size]
        return None

    def gate(self, p: Params, s: Tensor, index: int) -> Tensor:
        """Sigmoid gate number ``index`` (r=0, z=1); the hook KAF gates replace."""
        return torch.sigmoid(s)

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        (h,) = state
        H = self.hidden_size
        w_hh = p["weight_hh"]
        w_n = w_hh[-H:]
        gates = 0
        if "x" in self.terms:
            gates, xp = xp[:, :2 * H], xp[:, 2 * H:]
        if "h" in self.terms:
            gates = gates + linear(h, w_hh[:2 * H])
        bias = self.gate_bias(p)
        if bias is not None:
            gates = gates + bias
        gates = gates.expand(h.shape[0], -1)
        r, z = self.gate(p, gates[:, :H], 0), self.gate(p, gates[:, H:], 1)
        if self.reset_after:
            n = torch.tanh(xp + r * linear(h, w_n, p["bias_hh"][-H:] if self.bias else None))
        else:
            n = torch.tanh(xp + linear(r * h, w_n))
        return (z * h + (1 - z) * n,)

    def chrono_(self, p: Params, t_max: float, generator: torch.Generator | None = None) -> None:
        """Chrono initialisation for the keep gate: ``b_z ~ +log U[1, t_max-1]``, ``b_r = 0``.

        Set on one bias vector (``bias_ih``, or ``bias_gates`` for variants 1 and 3); the
        other bias's gate rows are zeroed so the effective bias is not doubled.
        """
        H = self.hidden_size
        if self.variant == 0:
            target = p["bias_ih"]
            p["bias_hh"][:2 * H] = 0
        elif "bias_gates" in p:
            target = p["bias_gates"]
        else:
            raise TypeError(f"chrono_: GRU variant {self.variant} has no gate bias to set")
        target[:H] = 0
        target[H:2 * H] = chrono_log_uniform(H, t_max, target, generator)
