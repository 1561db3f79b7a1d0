"""LSTM, exactly torch.nn.LSTM (gate order i, f, g, o; optional output projection)."""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import CellSpec, ParamSpec, Params, State, flat_linear, linear


class LSTMCell(CellSpec):
    """``c' = f c + i g``, ``h' = o tanh(c')`` (then ``h' = W_hr h'`` when ``proj_size > 0``).

    State ``(h, c)``; ``h`` has ``proj_size`` features when projecting, else ``hidden_size``.
    Both biases are folded into the time-parallel projection.
    """

    name = "lstm"
    gates = 4

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, proj_size: int = 0):
        super().__init__(input_size, hidden_size)
        self.bias = bias
        self.proj_size = proj_size

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.proj_size or self.hidden_size, self.hidden_size)

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("hx", "cx")

    def param_specs(self) -> list[ParamSpec]:
        G, H, I = self.gates * self.hidden_size, self.hidden_size, self.input_size
        specs = [
            ParamSpec("weight_ih", (G, I), recurrent=False),
            ParamSpec("weight_hh", (G, self.state_sizes[0])),
        ]
        if self.bias:
            specs += [
                ParamSpec("bias_ih", (G,), recurrent=False),
                ParamSpec("bias_hh", (G,), recurrent=False),
            ]
        if self.proj_size:
            specs.append(ParamSpec("weight_hr", (self.proj_size, H)))
        return specs

    def project(self, p: Params, x: Tensor, mask: Tensor | None, training: bool) -> Tensor:
        bias = p["bias_ih"] + p["bias_hh"] if self.bias else None
        return flat_linear(x, p["weight_ih"], bias)

    def gate(self, p: Params, s: Tensor, index: int) -> Tensor:
        """Sigmoid gate number ``index`` (i=0, f=1, o=2); the hook KAF gates replace."""
        return torch.sigmoid(s)

    def cell_update(self, p: Params, xp: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
        """The LSTM update without projection (shared with the time-gated and KAF LSTMs)."""
        i, f, g, o = (xp + linear(h, p["weight_hh"])).chunk(4, dim=1)
        c = self.gate(p, f, 1) * c + self.gate(p, i, 0) * torch.tanh(g)
        return self.gate(p, o, 2) * torch.tanh(c), c

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        h, c = self.cell_update(p, xp, *state)
        if self.proj_size:
            h = linear(h, p["weight_hr"])
        return h, c

    def chrono_(self, p: Params, t_max: float, generator: torch.Generator | None = None) -> None:
        """Chrono initialisation (Tallec & Ollivier 2018): ``b_f ~ log U[1, t_max-1]``,
        ``b_i = -b_f``, every other bias zero; set on ``bias_ih``, ``bias_hh`` zeroed."""
        H = self.hidden_size
        log_u = chrono_log_uniform(H, t_max, p["bias_ih"], generator)
        p["bias_ih"].zero_()
        p["bias_hh"].zero_()
        p["bias_ih"][H : 2 * H] = log_u
        p["bias_ih"][:H] = -log_u


def chrono_log_uniform(n: int, t_max: float, like: Tensor, generator: torch.Generator | None) -> Tensor:
    """``log u`` with ``u ~ U[1, t_max - 1]``: forgetting times spread uniformly over [2, t_max]."""
    if not (isinstance(t_max, (int, float)) and math.isfinite(t_max) and t_max > 2):
        raise ValueError(f"t_max must be a finite number greater than 2, got {t_max!r}")
    u = torch.empty(n, dtype=torch.float64).uniform_(1.0, t_max - 1.0, generator=generator)
    return u.log().to(device=like.device, dtype=like.dtype)
