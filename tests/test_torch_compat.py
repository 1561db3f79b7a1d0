"""revrnn.nn.LSTM / GRU against torch.nn.LSTM / GRU: same state_dict, outputs, states, gradients.

Tolerances: float64 1e-10 relative and float32 1e-5 relative. Both run the same equations
with a different summation order (revrnn folds both biases into the input projection and
uses separate GEMMs), so the differences are a few ulps per step accumulated over T steps:
~1e-15 in float64 and ~1e-6 in float32 for these sizes.
"""
from __future__ import annotations

import zlib

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import revrnn
from utils import as_tuple, assert_close_all, grads, loss_of, rel_err

RTOL = {torch.float64: 1e-10, torch.float32: 1e-5}
CASES = [
    dict(num_layers=1),
    dict(num_layers=2, bidirectional=True),
    dict(num_layers=3, batch_first=True),
    dict(num_layers=2, bias=False, bidirectional=True),
]


def pair(kind: str, dtype, backend="reference", **kw):
    torch_cls, our_cls = (nn.LSTM, revrnn.nn.LSTM) if kind == "lstm" else (nn.GRU, revrnn.nn.GRU)
    ref = torch_cls(5, 45 if kind == "gru" else 9, dtype=dtype, **kw)
    ours = our_cls(5, ref.hidden_size, dtype=dtype, backend=backend, **kw)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_matches_torch(kind, case, dtype):
    torch.manual_seed(zlib.crc32(f"{kind}{case}".encode()))  # hash(str) differs per process
    ref, ours = pair(kind, dtype, **case)
    T, B = 37, 3
    x = torch.randn((B, T, 5) if case.get("batch_first") else (T, B, 5), dtype=dtype)
    assert_close_all(grads(ours, x), grads(ref, x), RTOL[dtype])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_given_initial_state(kind):
    torch.manual_seed(1)
    ref, ours = pair(kind, torch.float64, num_layers=2, bidirectional=True)
    x = torch.randn(7, 4, 5, dtype=torch.float64)
    H = ref.hidden_size
    hx = torch.randn(4, 4, H, dtype=torch.float64)
    if kind == "lstm":
        hx = (hx, torch.randn(4, 4, H, dtype=torch.float64))
    assert_close_all(grads(ours, x, hx), grads(ref, x, hx), 1e-10)


def test_lstm_proj_size():
    torch.manual_seed(2)
    ref, ours = pair("lstm", torch.float64, num_layers=2, bidirectional=True, proj_size=4)
    x = torch.randn(9, 2, 5, dtype=torch.float64)
    hx = (torch.randn(4, 2, 4, dtype=torch.float64), torch.randn(4, 2, 9, dtype=torch.float64))
    assert_close_all(grads(ours, x, hx), grads(ref, x, hx), 1e-10)
    assert [k for k, _ in ours.named_parameters()] == [k for k, _ in ref.named_parameters()]


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("enforce_sorted", [True, False])
def test_packed_sequence(kind, enforce_sorted):
    torch.manual_seed(3)
    ref, ours = pair(kind, torch.float64, num_layers=2, bidirectional=True)
    lengths = torch.tensor([6, 6, 4, 1]) if enforce_sorted else torch.tensor([3, 6, 1, 6])
    x = torch.randn(6, 4, 5, dtype=torch.float64)
    results = []
    for m in (ours, ref):
        xi = x.clone().requires_grad_()
        packed = pack_padded_sequence(xi, lengths, enforce_sorted=enforce_sorted)
        out, state = m(packed)
        assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
        padded, _ = pad_packed_sequence(out)
        loss = loss_of(padded, state)
        g = torch.autograd.grad(loss, [xi, *m.parameters()])
        results.append({"out": padded.detach(), **{f"s{k}": s.detach() for k, s in enumerate(as_tuple(state))},
                        **{f"g{k}": v for k, v in enumerate(g)}})
        if m is ours:
            assert torch.equal(out.batch_sizes, packed.batch_sizes)
    assert_close_all(results[0], results[1], 1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_unbatched_input(kind):
    torch.manual_seed(4)
    ref, ours = pair(kind, torch.float64, num_layers=2)
    x = torch.randn(8, 5, dtype=torch.float64)
    out_r, st_r = ref(x)
    out_o, st_o = ours(x)
    assert out_o.shape == out_r.shape
    assert rel_err(out_o, out_r) < 1e-10
    for a, b in zip(as_tuple(st_o), as_tuple(st_r)):
        assert a.shape == b.shape and rel_err(a, b) < 1e-10


def test_state_dict_round_trip_and_names():
    ref = nn.GRU(3, 4, num_layers=2, bidirectional=True)
    ours = revrnn.nn.GRU(3, 4, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for (k, a), b in zip(ours.state_dict().items(), ref.state_dict().values()):
        assert a.shape == b.shape, k
    ref.load_state_dict(ours.state_dict())  # and back


def test_default_init_matches_torch_distribution():
    ours = revrnn.nn.LSTM(3, 16)
    bound = 1 / 16 ** 0.5
    for p in ours.parameters():
        assert p.abs().max() <= bound and p.std() > bound / 4


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(5)
    m = revrnn.nn.GRU(3, 8, num_layers=2, dropout=0.5)
    x = torch.randn(5, 2, 3)
    m.eval()
    a, _ = m(x)
    b, _ = m(x)
    assert torch.equal(a, b)
    m.train()
    c, _ = m(x)
    assert not torch.allclose(a, c)


def test_dropout_warning_single_layer():
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        revrnn.nn.LSTM(3, 4, dropout=0.2)
