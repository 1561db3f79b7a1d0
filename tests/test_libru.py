"""revrnn.nn.LiBRU against the light Bayesian recurrent unit of the official code
(idiap/bayesian-recurrence ``libru.py``), re-written here with torch.nn.BatchNorm1d."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from revrnn.nn.libru import LiBRU
from utils import (assert_packed_matches_separate, assert_recompute_matches_store, gradcheck_module, grads, n_params,
                   randomise_bn, rel_err, snapshot, valid_mask)

F64 = torch.float64
FORMS = ["probs", "logprobs"]


def libru_loop(x: Tensor, lengths: list[int], p: dict[str, Tensor], form: str,
               training: bool) -> tuple[Tensor, Tensor, nn.BatchNorm1d | None]:
    """One layer and direction as the official code computes it, from h = 0: one BatchNorm1d
    applied to W x then to W_z x (in training over the valid steps), then the naive
    ``log(h + 1e-11)`` (probs) or ``log(z e^h + (1 - z) e^c)`` (logprobs) loop."""
    T, B, _ = x.shape
    W, V = p["weight_ih_l0"], p["weight_hh_l0"]
    H = V.shape[1]
    wx, wzx = x @ W[:H].T, x @ W[H:].T
    valid = valid_mask(T, lengths)
    bn = None
    if "bn_weight_l0" in p:
        bn = nn.BatchNorm1d(H, momentum=0.05, dtype=x.dtype).train(training)
        bn.load_state_dict({"weight": p["bn_weight_l0"], "bias": p["bn_bias_l0"],
                            "running_mean": p["bn_running_mean_l0"], "running_var": p["bn_running_var_l0"],
                            "num_batches_tracked": torch.tensor(0)})

        def norm(y: Tensor) -> Tensor:
            out = y.clone()
            out[valid] = bn(y[valid])
            return out

        with torch.no_grad():
            wx, wzx = norm(wx), norm(wzx)  # this order: the running statistics see W x first
    elif "bias_ih_l0" in p:
        wx, wzx = wx + p["bias_ih_l0"][:H], wzx + p["bias_ih_l0"][H:]
    h, outs = x.new_zeros(B, H), x.new_zeros(T, B, H)
    for t in range(T):
        if form == "probs":
            z = torch.sigmoid(wzx[t] + torch.log(h + 1e-11) @ V[H:].T)
            c = torch.sigmoid(wx[t] + torch.log(h + 1e-11) @ V[:H].T)
            new = z * h + (1 - z) * c
        else:
            z = torch.sigmoid(wzx[t] + h @ V[H:].T)
            c = F.softplus(wx[t] + h @ V[:H].T)
            new = torch.log(z * torch.exp(h) + (1 - z) * torch.exp(c))
        h = torch.where(valid[t, :, None], new, h)
        outs[t] = h * valid[t, :, None]
    return outs, h, bn


# -- equations -------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "nobn"])
@pytest.mark.parametrize("form", FORMS)
def test_forward_matches_reference(form, batch_norm, training):
    torch.manual_seed(0)
    m = LiBRU(3, 5, form=form, batch_norm=batch_norm, dtype=F64).train(training)
    if batch_norm:
        randomise_bn(m)
    else:
        nn.init.normal_(m.bias_ih_l0)
    p = snapshot(m)
    x = torch.randn(6, 4, 3, dtype=F64)
    out, h_n = m(x)
    want_out, want_h, bn = libru_loop(x, [6] * 4, p, form, training)
    assert rel_err(out, want_out) < 1e-10
    assert rel_err(h_n[0], want_h) < 1e-10
    if batch_norm:  # one BN shared by both projections: its running statistics moved twice
        assert rel_err(m.bn_running_mean_l0, bn.running_mean) < 1e-13
        assert rel_err(m.bn_running_var_l0, bn.running_var) < 1e-13


def test_packed_training_uses_valid_steps_only():
    torch.manual_seed(1)
    m = LiBRU(3, 4, dtype=F64)
    randomise_bn(m)
    p = snapshot(m)
    lengths = [2, 5, 3]
    x = torch.randn(5, 3, 3, dtype=F64)
    out, h_n = m(pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False))
    out, _ = pad_packed_sequence(out)
    want_out, want_h, bn = libru_loop(x, lengths, p, "probs", True)
    assert rel_err(out, want_out) < 1e-10
    assert rel_err(h_n[0], want_h) < 1e-10
    assert rel_err(m.bn_running_var_l0, bn.running_var) < 1e-13


@pytest.mark.parametrize("form", FORMS)
def test_packed_matches_separate_in_eval(form):
    torch.manual_seed(2)
    m = LiBRU(3, 4, num_layers=2, bidirectional=True, form=form, dtype=F64).eval()
    randomise_bn(m)
    assert_packed_matches_separate(m, torch.randn(5, 3, 3, dtype=F64), [3, 5, 1])


# -- gradients and memory ----------------------------------------------------------------------

@pytest.mark.parametrize("form", FORMS)
def test_gradcheck(form):
    torch.manual_seed(3)
    m = LiBRU(3, 3, num_layers=2, bidirectional=True, form=form, dtype=F64)
    randomise_bn(m)
    x = torch.randn(4, 2, 3, dtype=F64)
    h0 = torch.rand(4, 2, 3, dtype=F64) * 0.8 + 0.1 if form == "probs" else torch.randn(4, 2, 3, dtype=F64)
    gradcheck_module(m, x, h0)


@pytest.mark.parametrize("form", FORMS)
def test_gradcheck_no_batch_norm_eval(form):
    torch.manual_seed(4)
    m = LiBRU(3, 3, form=form, batch_norm=False, batch_first=True, dtype=F64).eval()
    gradcheck_module(m, torch.randn(2, 4, 3, dtype=F64))


@pytest.mark.parametrize("form", FORMS)
def test_recompute_matches_store(form):
    x = torch.randn(7, 3, 3, dtype=F64)
    assert_recompute_matches_store(
        lambda **kw: LiBRU(3, 4, num_layers=2, bidirectional=True, form=form, dtype=F64, **kw), x)


# -- documented properties ---------------------------------------------------------------------

def test_probs_state_stays_in_unit_interval():
    """h ∈ (0, 1) from h₀ ∈ (0, 1); in a saturated float32 run from h₀ = 0, within [0, 1]."""
    torch.manual_seed(5)
    x = torch.randn(60, 3, 4, dtype=F64) * 3
    m = LiBRU(4, 16, num_layers=2, bidirectional=True, dtype=F64)
    with torch.no_grad():
        for name, w in m.named_parameters():
            if name.startswith("weight_hh"):
                w.mul_(0.2)
    h0 = torch.rand(4, 3, 16, dtype=F64)
    for training in (True, False):
        out, h_n = m.train(training)(x, h0)
        assert 0 < out.min() and out.max() < 1
        assert 0 < h_n.min() and h_n.max() < 1
    saturated = LiBRU(4, 16, num_layers=2, bidirectional=True)
    out, _ = saturated(x.float())
    assert 0 <= out.min() and out.max() <= 1
    assert (out == 0).any() or (out == 1).any()  # it is saturated


def test_probs_float16_from_zero_state():
    """log(0 + 1e-11) is -inf in float16 (1e-11 underflows) and the recurrent GEMM turns it into
    NaN; the clamp keeps the cell finite."""
    torch.manual_seed(6)
    m = LiBRU(3, 8, batch_norm=False, dtype=torch.float16)
    x = torch.randn(5, 2, 3, dtype=torch.float16)
    h0 = torch.zeros(2, 8, dtype=torch.float16)
    naive = torch.log(h0 + 1e-11) @ m.weight_hh_l0.detach().T
    assert not naive.isfinite().all()
    out, h_n = m(x)
    assert out.isfinite().all() and 0 <= out.min() and out.max() <= 1


def test_logprobs_stable_for_large_preactivations():
    """Candidate pre-activations ≈ 150: e^c overflows float32 (> e^88.7), not float64."""
    torch.manual_seed(7)
    m32 = LiBRU(3, 6, form="logprobs", batch_norm=False)
    with torch.no_grad():
        m32.bias_ih_l0[:6] = 150
        m32.weight_hh_l0.mul_(0.01)
    m64 = copy.deepcopy(m32).double()
    x = torch.randn(6, 2, 3)
    naive32, _, _ = libru_loop(x, [6, 6], snapshot(m32), "logprobs", True)
    assert not naive32.isfinite().all()  # the naive form overflows in float32
    naive64, _, _ = libru_loop(x.double(), [6, 6], snapshot(m64), "logprobs", True)
    assert naive64.isfinite().all() and naive64.min() > 100
    g = grads(m32, x)
    assert all(v.isfinite().all() for v in g.values())
    assert rel_err(g["output"].double(), naive64) < 1e-5


def test_parameter_counts_and_one_shared_batch_norm():
    I, H = 7, 5
    m = LiBRU(I, H)
    assert m.form == "probs"  # the documented default
    assert n_params(m) == 2 * H * I + 2 * H * H + 2 * H  # W, W_z; V, V_z; one BN's γ, β of H
    assert {k: tuple(b.shape) for k, b in m.named_buffers()} == {
        "bn_running_mean_l0": (H,), "bn_running_var_l0": (H,)}
    assert n_params(LiBRU(I, H, batch_norm=False)) == 2 * H * I + 2 * H * H + 2 * H
    assert n_params(LiBRU(I, H, batch_norm=False, bias=False)) == 2 * H * I + 2 * H * H


def test_bad_arguments():
    with pytest.raises(RuntimeError, match="input_size"):
        LiBRU(3, 4)(torch.randn(5, 2, 4))
    for bad in ("prob", "ligru", None):
        with pytest.raises(ValueError, match=f"form.*{bad!r}"):
            LiBRU(3, 4, form=bad)
