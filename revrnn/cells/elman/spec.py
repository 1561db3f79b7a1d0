"""The Elman RNN of torch.nn.RNN: ``h' = φ(W_ih x + b_ih + W_hh h + b_hh)`` with φ = tanh or ReLU.

Parameters and initialisation are torch.nn.RNN's (every tensor ~ U(−1/√H, 1/√H)); both biases
are added in the time-parallel projection, so the step is one GEMM and one activation.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..base import CellSpec, ParamSpec, Params, State, flat_linear, linear

NONLINEARITIES = ("tanh", "relu")


def check_nonlinearity(nonlinearity: str) -> str:
    if nonlinearity not in NONLINEARITIES:
        raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or 'relu'.")
    return nonlinearity


class ElmanCell(CellSpec):
    name = "elman"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, nonlinearity: str = "tanh") -> None:
        super().__init__(input_size, hidden_size)
        self.bias = bias
        self.nonlinearity = check_nonlinearity(nonlinearity)

    def param_specs(self) -> list[ParamSpec]:
        H = self.hidden_size
        specs = [ParamSpec("weight_ih", (H, self.input_size), recurrent=False), ParamSpec("weight_hh", (H, H))]
        if self.bias:
            specs += [ParamSpec("bias_ih", (H,), recurrent=False), ParamSpec("bias_hh", (H,), recurrent=False)]
        return specs

    def project(self, p: Params, x: Tensor, mask: Tensor | None, training: bool) -> Tensor:
        return flat_linear(x, p["weight_ih"], p["bias_ih"] + p["bias_hh"] if self.bias else None)

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        pre = xp + linear(state[0], p["weight_hh"])
        return (torch.tanh(pre) if self.nonlinearity == "tanh" else torch.relu(pre),)
