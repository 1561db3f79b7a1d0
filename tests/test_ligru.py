"""revrnn.nn.LiGRU against the Light GRU equations (Ravanelli et al. 2018, pytorch-kaldi)."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from revrnn.nn.ligru import LiGRU
from utils import (assert_close_all, assert_packed_matches_separate, assert_recompute_matches_store, gradcheck_module,
                   grads, n_params, randomise_bn, rel_err, snapshot, valid_mask)

F64 = torch.float64
MOMENTUM, EPS = 0.05, 1e-5


def bn_loop(y: Tensor, valid: Tensor, p: dict[str, Tensor], training: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Batch norm of y (T, B, F) written out: (normalised y, new running mean, new running var).
    Training: statistics of the valid rows (biased variance to normalise, unbiased into the
    running variance, momentum 0.05); eval: the running statistics, unchanged."""
    mean, var = p["bn_running_mean_l0"], p["bn_running_var_l0"]
    if training:
        rows = y[valid]
        n = rows.shape[0]
        batch_mean = rows.sum(0) / n
        batch_var = ((rows - batch_mean) ** 2).sum(0) / n
        new_mean = (1 - MOMENTUM) * mean + MOMENTUM * batch_mean
        new_var = (1 - MOMENTUM) * var + MOMENTUM * batch_var * n / (n - 1)
        mean, var = batch_mean, batch_var
    else:
        new_mean, new_var = mean, var
    out = (y - mean) / torch.sqrt(var + EPS) * p["bn_weight_l0"] + p["bn_bias_l0"]
    return out, new_mean, new_var


def ligru_loop(x: Tensor, lengths: list[int], p: dict[str, Tensor],
               training: bool) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor] | None]:
    """Light GRU, one layer and direction, step by step from h = 0, each sequence stopping at
    its length. Returns outputs (0 on padding), final h and the new running statistics."""
    T, B, _ = x.shape
    W, U = p["weight_ih_l0"], p["weight_hh_l0"]
    H = U.shape[1]
    a = x @ W.T
    running = None
    if "bn_weight_l0" in p:
        a, *running = bn_loop(a, valid_mask(T, lengths), p, training)
    elif "bias_ih_l0" in p:
        a = a + p["bias_ih_l0"]
    valid = valid_mask(T, lengths)[:, :, None]
    h, outs = x.new_zeros(B, H), x.new_zeros(T, B, H)
    for t in range(T):
        z = torch.sigmoid(a[t, :, H:] + h @ U[H:].T)
        n = torch.relu(a[t, :, :H] + h @ U[:H].T)
        h = torch.where(valid[t], z * h + (1 - z) * n, h)
        outs[t] = h * valid[t]
    return outs, h, running


class Reseeded(nn.Module):
    """Draws the same random numbers on every call, so a module with recurrent dropout is a
    deterministic function for gradcheck."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x, hx=None):
        torch.manual_seed(99)
        return self.inner(x, hx)


# -- equations -------------------------------------------------------------------------------

@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "nobn"])
def test_forward_matches_equations(batch_norm, training):
    torch.manual_seed(0)
    m = LiGRU(3, 5, batch_norm=batch_norm, dtype=F64).train(training)
    if batch_norm:
        randomise_bn(m)
    else:
        nn.init.normal_(m.bias_ih_l0)
    p = snapshot(m)
    x = torch.randn(6, 4, 3, dtype=F64)
    out, h_n = m(x)
    want_out, want_h, running = ligru_loop(x, [6] * 4, p, training)
    assert rel_err(out, want_out) < 1e-13
    assert rel_err(h_n[0], want_h) < 1e-13
    if batch_norm:  # running statistics move in training only, by the momentum rule
        assert rel_err(m.bn_running_mean_l0, running[0]) < 1e-13
        assert rel_err(m.bn_running_var_l0, running[1]) < 1e-13
        moved = not torch.equal(m.bn_running_mean_l0, p["bn_running_mean_l0"])
        assert moved == training


def test_packed_training_uses_valid_steps_only():
    """In training the BN statistics come from the valid steps of a PackedSequence only."""
    torch.manual_seed(1)
    m = LiGRU(3, 4, dtype=F64)
    randomise_bn(m)
    p = snapshot(m)
    lengths = [2, 5, 3]
    x = torch.randn(5, 3, 3, dtype=F64)
    out, h_n = m(pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False))
    out, _ = pad_packed_sequence(out)
    want_out, want_h, running = ligru_loop(x, lengths, p, True)
    assert rel_err(out, want_out) < 1e-13
    assert rel_err(h_n[0], want_h) < 1e-13
    assert rel_err(m.bn_running_mean_l0, running[0]) < 1e-13
    assert rel_err(m.bn_running_var_l0, running[1]) < 1e-13


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "nobn"])
def test_packed_matches_separate_in_eval(batch_norm):
    torch.manual_seed(2)
    m = LiGRU(3, 4, num_layers=2, bidirectional=True, batch_norm=batch_norm, dtype=F64).eval()
    if batch_norm:
        randomise_bn(m)
    assert_packed_matches_separate(m, torch.randn(5, 3, 3, dtype=F64), [3, 5, 1])


# -- gradients and memory ----------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    dict(batch_norm=True, training=True, num_layers=2, bidirectional=True),
    dict(batch_norm=True, training=False),
    dict(batch_norm=False, training=True, num_layers=2),
    dict(batch_norm=True, training=True, recurrent_dropout=0.4, num_layers=2, bidirectional=True),
], ids=["bn-train-bidir2", "bn-eval", "nobn-2layers", "dropout-bidir2"])
def test_gradcheck(case):
    torch.manual_seed(3)
    case = dict(case)
    training = case.pop("training")
    m = LiGRU(3, 3, dtype=F64, **case).train(training)
    randomise_bn(m)
    x, h0 = torch.randn(4, 2, 3, dtype=F64), torch.rand(m.num_layers * m.num_directions, 2, 3, dtype=F64)
    gradcheck_module(Reseeded(m) if m.recurrent_dropout else m, x, h0)


@pytest.mark.parametrize("batch_norm", [True, False], ids=["bn", "nobn"])
def test_recompute_matches_store(batch_norm):
    x = torch.randn(7, 3, 3, dtype=F64)
    assert_recompute_matches_store(
        lambda **kw: LiGRU(3, 4, num_layers=2, bidirectional=True, batch_norm=batch_norm, dtype=F64, **kw), x)


def test_recompute_with_dropout_and_bn_running_stats():
    """Recompute replays the forward's dropout masks and updates the BN running statistics
    once per forward, exactly as store does."""
    torch.manual_seed(4)
    store = LiGRU(3, 4, num_layers=2, bidirectional=True, recurrent_dropout=0.5, dtype=F64)
    x = torch.randn(9, 3, 3, dtype=F64)
    before = snapshot(store)
    torch.manual_seed(5)
    want = grads(store, x)
    for k in (1, 4):
        other = LiGRU(3, 4, num_layers=2, bidirectional=True, recurrent_dropout=0.5, dtype=F64,
                      memory="recompute", checkpoint_every=k)
        other.load_state_dict(before)
        torch.manual_seed(5)
        assert_close_all(grads(other, x), want, 1e-12)
        for name, buf in store.named_buffers():
            assert torch.equal(other.get_buffer(name), buf), name


# -- documented properties ---------------------------------------------------------------------

def test_batch_norm_train_vs_eval():
    torch.manual_seed(6)
    m = LiGRU(3, 4, dtype=F64)
    x = torch.randn(5, 3, 3, dtype=F64)
    y = x.clone()
    y[:, 1:] = torch.randn(5, 2, 3, dtype=F64) * 3 + 1  # other batch elements changed

    before = snapshot(m)
    a, _ = m(x)
    assert not torch.equal(m.bn_running_mean_l0, before["bn_running_mean_l0"])
    assert not torch.equal(m.bn_running_var_l0, before["bn_running_var_l0"])
    b, _ = m(y)
    assert (a[:, 0] - b[:, 0]).abs().max() > 1e-3  # batch statistics couple the batch

    m.eval()
    frozen = snapshot(m)
    a, _ = m(x)
    b, _ = m(y)
    assert torch.equal(a[:, 0], b[:, 0])  # running statistics: no coupling
    for name, buf in m.named_buffers():
        assert torch.equal(buf, frozen[name]), name
    want, _, _ = ligru_loop(x, [5] * 3, frozen, False)
    assert rel_err(a, want) < 1e-13


def test_one_row_in_training_is_an_error():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        LiGRU(3, 4)(torch.randn(1, 1, 3))


def dropout_probe(p: float) -> LiGRU:
    """z ≈ 0 (bias -60), U = 0, candidate pre-activation 5 + 0.1 W x > 0: h_t = ReLU(a_t) ⊙ m."""
    m = LiGRU(3, 16, batch_norm=False, recurrent_dropout=p, dtype=F64)
    with torch.no_grad():
        m.weight_ih_l0.mul_(0.1)
        m.weight_hh_l0.zero_()
        m.bias_ih_l0[:16] = 5
        m.bias_ih_l0[16:] = -60
    return m


def test_recurrent_dropout_mask_fixed_over_time_and_inverted():
    torch.manual_seed(7)
    p = 0.5
    m, plain = dropout_probe(p), dropout_probe(0.0)
    plain.load_state_dict(m.state_dict())
    x = torch.randn(6, 8, 3, dtype=F64)
    ref, _ = plain(x)
    assert (ref > 1).all()
    out, _ = m(x)
    dropped = out == 0
    assert torch.equal(dropped, dropped[:1].expand_as(dropped))  # the same units at every step
    assert not torch.equal(dropped[0, 0], dropped[0, 1])  # one mask per sequence
    assert 0.2 < dropped.double().mean() < 0.8
    assert rel_err(out[~dropped], ref[~dropped] / (1 - p)) < 1e-12  # kept units scaled by 1/(1-p)

    m.eval()
    assert torch.equal(m(x)[0], ref)  # identity in eval


def test_hidden_state_is_nonnegative():
    torch.manual_seed(8)
    m = LiGRU(4, 16, num_layers=2, bidirectional=True, recurrent_dropout=0.2)
    with torch.no_grad():
        for w in m.parameters():
            w.mul_(3)
    x = torch.randn(40, 3, 4) * 3
    for training in (True, False):
        out, h_n = m.train(training)(x)
        assert out.min() >= 0 and h_n.min() >= 0
        assert out.max() > 0


def test_parameter_counts():
    I, H = 7, 5
    bn = LiGRU(I, H)
    assert n_params(bn) == 2 * H * I + 2 * H * H + 2 * 2 * H  # W_z, W_h; U (2H, H); 2 BNs' γ, β
    assert sum(b.numel() for b in bn.buffers()) == 2 * 2 * H  # 2 BNs' running mean, var
    assert n_params(LiGRU(I, H, batch_norm=False)) == 2 * H * I + 2 * H * H + 2 * H
    assert n_params(LiGRU(I, H, batch_norm=False, bias=False)) == 2 * H * I + 2 * H * H


def test_bad_arguments():
    m = LiGRU(3, 4)
    with pytest.raises(RuntimeError, match="input_size"):
        m(torch.randn(5, 2, 4))
    for bad in (1.0, -0.1, 1.5, "0.1", True):
        with pytest.raises(ValueError, match=f"recurrent_dropout.*{bad!r}"):
            LiGRU(3, 4, recurrent_dropout=bad)
    with pytest.raises(TypeError, match="batch_norm"):
        LiGRU(3, 4, batch_norm=1)

