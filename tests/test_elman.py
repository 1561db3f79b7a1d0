"""The Elman RNN (revrnn.nn.RNN): torch.nn.RNN's drop-in, against torch.nn.RNN itself and a
hand-written loop; gradcheck; bad arguments. Backends and strategies: tests/test_conformance.py."""
from __future__ import annotations

import pytest
import torch

import revrnn
from utils import assert_close_all, gradcheck_module, grads, rel_err

F64 = torch.float64


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_torch_rnn(nonlinearity, bias):
    """Same constructor, state_dict and outputs as torch.nn.RNN (two layers, bidirectional)."""
    torch.manual_seed(0)
    theirs = torch.nn.RNN(4, 9, num_layers=2, nonlinearity=nonlinearity, bias=bias, bidirectional=True, dtype=F64)
    ours = revrnn.nn.RNN(4, 9, num_layers=2, nonlinearity=nonlinearity, bias=bias, bidirectional=True, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(11, 3, 4, dtype=F64)
    assert_close_all(grads(ours, x), grads(theirs, x), 1e-12)


def test_equations():
    torch.manual_seed(1)
    m = revrnn.nn.RNN(3, 5, nonlinearity="relu", dtype=F64)
    x = torch.randn(6, 2, 3, dtype=F64)
    h = torch.zeros(2, 5, dtype=F64)
    for t in range(6):
        h = torch.relu(x[t] @ m.weight_ih_l0.T + m.bias_ih_l0 + h @ m.weight_hh_l0.T + m.bias_hh_l0)
    out, h_n = m(x)
    assert rel_err(h_n[0], h) < 1e-14 and rel_err(out[-1], h) < 1e-14


def test_gradcheck():
    torch.manual_seed(2)
    gradcheck_module(revrnn.nn.RNN(2, 3, dtype=F64, memory="recompute", checkpoint_every=2),
                     torch.randn(4, 2, 2, dtype=F64))


def test_bad_nonlinearity():
    with pytest.raises(ValueError, match="Unknown nonlinearity 'sigmoid'"):
        revrnn.nn.RNN(2, 3, nonlinearity="sigmoid")


def test_backends():
    """The compiled executor runs it (tests/test_cpu_backend.py); Triton has no kernels for it
    and, asked for, names the cell."""
    from revrnn.backends import _REGISTRY
    cell = revrnn.nn.RNN(2, 3).cells[0]
    assert _REGISTRY["cpu"].runner_for(cell) is not None
    assert not _REGISTRY["triton"].supports(cell, torch.float32)
    if revrnn.available_backends()["triton"] is None:
        with pytest.raises(revrnn.BackendUnavailable, match="elman"):
            revrnn.backends.resolve("triton", cell, torch.device("cpu"))
