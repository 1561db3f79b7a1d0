"""revrnn.init.chrono_: the bias distribution of Tallec & Ollivier (2018)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import revrnn
from revrnn.init import chrono_

T_MAX, H = 750, 1500


def forgetting_times(b: torch.Tensor) -> torch.Tensor:
    # gate σ(b) = u/(1+u) with u = e^b; forgetting time 1/(1-σ(b)) = 1 + u
    return 1 + b.double().exp()


def check_uniform(times: torch.Tensor, lo: float, hi: float) -> None:
    assert times.min() >= lo - 1e-6 and times.max() <= hi + 1e-6
    # Kolmogorov–Smirnov distance to U[lo, hi]; 1.95/√n is the 0.1% critical value
    x = times.sort().values
    cdf = (x - lo) / (hi - lo)
    n = len(x)
    d = torch.maximum(torch.arange(1, n + 1) / n - cdf, cdf - torch.arange(n) / n).max()
    assert d < 1.95 / math.sqrt(n)


@pytest.mark.parametrize("cls", [revrnn.nn.LSTM, nn.LSTM])
def test_lstm(cls):
    m = chrono_(cls(3, H, num_layers=2, bidirectional=True), T_MAX)
    for suffix in ("_l0", "_l1_reverse"):
        b_ih, b_hh = getattr(m, "bias_ih" + suffix), getattr(m, "bias_hh" + suffix)
        b_i, b_f, b_g, b_o = b_ih.detach().chunk(4)
        check_uniform(forgetting_times(b_f), 2, T_MAX)
        assert torch.equal(b_i, -b_f)
        assert not b_g.any() and not b_o.any() and not b_hh.any()


@pytest.mark.parametrize("cls", [revrnn.nn.GRU, nn.GRU])
def test_gru(cls):
    m = cls(3, H)
    with torch.no_grad():
        m.bias_ih_l0.fill_(0.5)
        m.bias_hh_l0.fill_(0.5)
    chrono_(m, T_MAX)
    b_r, b_z, b_n = m.bias_ih_l0.detach().chunk(3)
    h_r, h_z, h_n = m.bias_hh_l0.detach().chunk(3)
    # keep gate z: time to forget 1/(1-z) spread over [2, t_max]
    check_uniform(forgetting_times(b_z), 2, T_MAX)
    assert not b_r.any() and not h_r.any() and not h_z.any()
    assert (b_n == 0.5).all() and (h_n == 0.5).all()  # candidate biases untouched


def test_gru_variant_sets_gate_bias():
    m = chrono_(revrnn.nn.GRU(3, H, variant=1), T_MAX)
    b_r, b_z = m.bias_gates_l0.detach().chunk(2)
    check_uniform(forgetting_times(b_z), 2, T_MAX)
    assert not b_r.any()
    with pytest.raises(TypeError, match="variant 2 has no gate bias"):
        chrono_(revrnn.nn.GRU(3, 4, variant=2), T_MAX)


def test_reproducible_with_generator():
    a = chrono_(revrnn.nn.LSTM(3, 8), 100, generator=torch.Generator().manual_seed(7))
    b = chrono_(revrnn.nn.LSTM(3, 8), 100, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a.bias_ih_l0, b.bias_ih_l0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="t_max must be a finite number greater than 2, got 1"):
        chrono_(revrnn.nn.LSTM(3, 4), 1)
    with pytest.raises(ValueError, match="bias=True"):
        chrono_(nn.LSTM(3, 4, bias=False), 100)
    with pytest.raises(TypeError, match="Linear"):
        chrono_(nn.Linear(3, 4), 100)
