"""GRU reset-before and the Dey & Salem gate variants against a hand-written loop."""
from __future__ import annotations

import pytest
import torch

import revrnn
from utils import assert_recompute_matches_store, gradcheck_module, rel_err

F64 = torch.float64
H, I = 5, 3


def loop(m: revrnn.nn.GRU, x: torch.Tensor) -> torch.Tensor:
    """The equations written out once more, straight from the docstring, one step at a time."""
    W, U = m.weight_ih_l0, m.weight_hh_l0
    bi = m.bias_ih_l0 if m.bias else torch.zeros(W.shape[0], dtype=F64)
    bh = m.bias_hh_l0 if m.bias else torch.zeros(bi.shape[0], dtype=F64)
    h = torch.zeros(x.shape[1], H, dtype=F64)
    sig = torch.sigmoid
    for xt in x:
        if m.variant == 0:
            gx, nx = (xt @ W[:2 * H].T + bi[:2 * H]), xt @ W[2 * H:].T + bi[2 * H:]
            gh, Un, bn = h @ U[:2 * H].T + bh[:2 * H], U[2 * H:], bh[2 * H:]
        else:
            nx, bn = xt @ W.T + bi, bh
            gx = 0
            gh = {1: lambda: h @ U[:2 * H].T + m.bias_gates_l0, 2: lambda: h @ U[:2 * H].T,
                  3: lambda: m.bias_gates_l0.expand(len(h), -1)}[m.variant]()
            Un = U[2 * H:] if m.variant < 3 else U
        r, z = sig(gx + gh)[:, :H], sig(gx + gh)[:, H:]
        if m.reset_after:
            n = torch.tanh(nx + r * (h @ Un.T + bn))
        else:
            n = torch.tanh(nx + (r * h) @ Un.T + bn)
        h = z * h + (1 - z) * n
    return h


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_equations(variant, reset_after, bias):
    torch.manual_seed(variant)
    m = revrnn.nn.GRU(I, H, bias=bias, dtype=F64, reset_after=reset_after, variant=variant)
    x = torch.randn(11, 2, I, dtype=F64)
    _, h = m(x)
    assert rel_err(h[0], loop(m, x)) < 1e-12


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("variant", [0, 1, 2, 3])
def test_gradcheck_and_recompute(variant, reset_after):
    make = lambda **kw: revrnn.nn.GRU(I, 3, num_layers=2, bidirectional=variant == 1, dtype=F64,
                                      reset_after=reset_after, variant=variant, **kw)
    gradcheck_module(make(), torch.randn(4, 2, I, dtype=F64))
    assert_recompute_matches_store(make, torch.randn(9, 2, I, dtype=F64))


def test_parameter_counts():
    count = lambda v: sum(p.numel() for p in revrnn.nn.GRU(I, H, variant=v).parameters())
    full = count(0)
    # spec §1.2: GRU1 drops 2HI, GRU2 2HI + 2H, GRU3 2HI + 2H^2 (two bias vectors in GRU0)
    assert full == 3 * H * I + 3 * H * H + 6 * H
    assert full - count(1) == 2 * H * I + 2 * H
    assert full - count(2) == 2 * H * I + 4 * H
    assert full - count(3) == 2 * H * I + 2 * H * H + 2 * H


def test_reset_before_differs_from_reset_after():
    torch.manual_seed(0)
    a = revrnn.nn.GRU(I, H, dtype=F64)
    b = revrnn.nn.GRU(I, H, dtype=F64, reset_after=False)
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 2, I, dtype=F64)
    assert rel_err(b(x)[0], a(x)[0]) > 1e-3


def test_invalid_variant():
    with pytest.raises(ValueError, match="variant must be one of 0, 1, 2, 3, got 4"):
        revrnn.nn.GRU(I, H, variant=4)
