"""RevGRU / RevLSTM: exact reconstruction, reversible gradients against the stored quantised
forward, masks, dropout, range safety, the verify guard and activation memory
(spec ``reversible.md`` §6, tests 4 and 6-13)."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence

from revrnn import BackendUnavailable
from revrnn.backends import resolve
from revrnn.accounting import activation_bytes
from revrnn.nn import RevGRU, RevLSTM
from revrnn.cells.reversible import revgru as revgru_module
from revrnn.cells.reversible.buffer import MAX_CHUNK_OPS
from revrnn.cells.reversible.function import matmul_precision

from utils import as_tuple, assert_close_all, assert_packed_matches_separate, grads, loss_of, n_params, rel_err

CELLS = [RevGRU, RevLSTM]


def pair(cls, dtype=torch.float64, **kw):
    """A reversible module and a ``store`` module with the same weights, on the reference
    backend, whose two modes run the same gates (other backends: their own test files)."""
    rev = cls(5, 6, dtype=dtype, verify=True, backend="reference", **kw)
    store = cls(5, 6, dtype=dtype, memory="store", backend="reference", **kw)
    store.load_state_dict(rev.state_dict())
    return rev, store


def random_state(cls, layers: int, batch: int, hidden: int, dtype=torch.float64):
    h = torch.randn(layers, batch, hidden, dtype=dtype)
    return h if cls is RevGRU else (h, torch.randn(layers, batch, hidden, dtype=dtype))


# -- gradients ------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CELLS)
@pytest.mark.parametrize("forget_bits", [0, 1, 3, 10])
@pytest.mark.parametrize("layers", [1, 2])
def test_reversible_gradients_equal_store_float64(cls, forget_bits, layers):
    """Per parameter, input and initial state: the hand-written reversible backward equals
    autograd through the same quantised forward (rel. 1e-10), and outputs are bit-identical."""
    rev, store = pair(cls, num_layers=layers, forget_bits=forget_bits, chunk_size=7)
    x = torch.randn(23, 3, 5, dtype=torch.float64)
    hx = random_state(cls, layers, 3, 6)
    got, want = grads(rev, x, hx), grads(store, x, hx)
    for key in ("output", "state0"):
        assert torch.equal(got[key], want[key]), key
    assert_close_all(got, want, 1e-10)


@pytest.mark.parametrize("cls", CELLS)
def test_reversible_gradients_equal_store_float32(cls):
    rev, store = pair(cls, dtype=torch.float32, num_layers=2, forget_bits=3)
    x = torch.randn(40, 4, 5)
    got, want = grads(rev, x), grads(store, x)
    assert torch.equal(got["output"], want["output"])
    assert_close_all(got, want, 1e-5)


@pytest.mark.parametrize("cls", CELLS)
def test_gradients_follow_the_float_model(cls):
    """The straight-through gradient of the quantised model is close to the exact gradient of
    the same equations in float64 (they differ by the 2**-10 gate quantisation)."""
    rev = cls(5, 6, dtype=torch.float64, forget_bits=3)
    x = torch.randn(12, 3, 5, dtype=torch.float64)
    got = grads(rev, x)
    want = {k.removeprefix("rev."): v for k, v in grads(FloatModel(rev), x).items()}
    # the gates' 2**-10 quanta shift every entry by that much of the tensor's scale: per tensor
    assert_close_all(got, want, 2e-2, floor=1.0)


class FloatModel(torch.nn.Module):
    """The paper's equations in plain float autograd, on the weights of a one-layer module."""

    def __init__(self, rev) -> None:
        super().__init__()
        self.rev = rev

    def forward(self, x, hx=None):
        rev = self.rev
        cell, p = rev.cells[0], rev.cell_params(0)
        G, B = cell.half, x.shape[1]
        h = [x.new_zeros(B, G), x.new_zeros(B, G)]
        c = [x.new_zeros(B, G), x.new_zeros(B, G)]
        outs = []
        for xt in x:
            for j in (0, 1):
                w_ih, w_hh, b = cell.half_params(p, j + 1)
                xp = torch.nn.functional.linear(xt, w_ih, b)
                gt = cell.gates(xp, h[1 - j], w_hh)
                if isinstance(rev, RevGRU):
                    h[j] = gt.z * h[j] + (1 - gt.z) * gt.g
                else:
                    c[j] = gt.f * c[j] + gt.i * gt.g
                    h[j] = gt.p * h[j] + gt.o * torch.tanh(c[j])
            outs.append(torch.cat(h, 1))
        state = torch.cat(h, 1)[None]
        return torch.stack(outs), state if isinstance(rev, RevGRU) else (state, torch.cat(c, 1)[None])


@pytest.mark.parametrize("cls", CELLS)
def test_chunking_does_not_change_results(cls):
    """The spill policy depends on word values only, so chunk boundaries change neither the
    forward nor the gradients."""
    x = torch.randn(30, 2, 5, dtype=torch.float64)
    ref = None
    for chunk in (1, 4, 30):
        torch.manual_seed(3)
        m = cls(5, 6, dtype=torch.float64, forget_bits=10, chunk_size=chunk, verify=True)
        g = grads(m, x)
        if ref is None:
            ref = g
        else:
            assert torch.equal(g["output"], ref["output"])
            assert_close_all(g, ref, 1e-12)


# -- exact reconstruction -------------------------------------------------------------------
@pytest.mark.parametrize("cls", CELLS)
def test_bit_exact_reconstruction_10000_steps(cls):
    """Two layers sharing one buffer, variable lengths, locked dropout, T = 10,000: the reverse pass rebuilds
    the initial state bit for bit (verify=True) and empties the buffer, and the gradients
    are finite."""
    T, lengths = 10_000, torch.tensor([10_000, 9_983, 5_000, 1])
    m = cls(3, 8, num_layers=2, dropout=0.3, verify=True)
    x = torch.randn(T, 4, 3, requires_grad=True)
    out, state = m(pack_padded_sequence(x, lengths, enforce_sorted=False), random_state(cls, 2, 4, 8, torch.float32))
    assert m.last_stats.used_bits > 64 * 4 * 4 * 2  # more than the current words: it spilled
    (out.data.sum() + sum(s.sum() for s in as_tuple(state))).backward()
    assert torch.isfinite(x.grad).all() and x.grad[lengths[1]:, 1].eq(0).all()


def test_unbounded_lstm_state_reconstructs():
    """Saturated forget and input gates drive |c| far past 256, where the authors' int32
    states wrap; the int64 format reconstructs exactly."""
    m = RevLSTM(2, 4, forget_bits=3, verify=True)
    with torch.no_grad():
        G = 2
        for j in (1, 2):
            bias = getattr(m, f"bias{j}_l0")
            bias[0:G] = 8.0       # c-forget gate ~ 1
            bias[2 * G:3 * G] = 8.0  # input gate ~ 1
            bias[G:2 * G] = 8.0   # candidate ~ 1
    x = torch.zeros(1000, 2, 2, requires_grad=True)
    out, (h, c) = m(x)
    assert c.abs().max() > 256
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("cls", CELLS)
def test_masked_rows_are_untouched(cls):
    """A padded row's state passes through unchanged and its output is zero."""
    m = cls(5, 6, dtype=torch.float64, verify=True)
    assert_packed_matches_separate(m, torch.randn(9, 3, 5, dtype=torch.float64), [9, 4, 1])


@pytest.mark.parametrize("cls", CELLS)
def test_locked_dropout_replays_in_reverse(cls):
    """Dropout masks are drawn once per sequence and reused by the reverse pass: reconstruction
    is exact and gradients equal store's with the same masks."""
    rev, store = pair(cls, num_layers=3, dropout=0.4)
    rev.train(), store.train()
    x = torch.randn(15, 3, 5, dtype=torch.float64)
    torch.manual_seed(7)
    got = grads(rev, x)
    torch.manual_seed(7)
    want = grads(store, x)
    assert torch.equal(got["output"], want["output"])
    assert_close_all(got, want, 1e-10)
    torch.manual_seed(8)
    assert not torch.equal(grads(rev, x)["output"], got["output"])  # the masks are random


# -- state carry and guards -----------------------------------------------------------------
@pytest.mark.parametrize("cls", CELLS)
def test_returned_state_is_the_true_final_state(cls):
    """Regression for the authors' TBPTT bug: h_n is the final state, not the reconstructed
    initial one, and it is the same after backward."""
    rev, store = pair(cls)
    x = torch.randn(20, 2, 5, dtype=torch.float64)
    hx = random_state(cls, 1, 2, 6)
    out, state = rev(x, hx)
    _, want = store(x, hx)
    before = [s.clone() for s in as_tuple(state)]
    loss_of(out, state).backward()
    for s, b, w, h0 in zip(as_tuple(state), before, as_tuple(want), as_tuple(hx)):
        assert torch.equal(s, b) and torch.equal(s, w) and not torch.allclose(s, h0)
    assert torch.equal(out[-1], as_tuple(state)[0][0])


def test_verify_catches_a_perturbed_reverse_gate(monkeypatch):
    """Gates recomputed slightly differently in reverse (here: one ulp of float64 noise on the
    candidate) break exactness; verify=True raises instead of returning wrong gradients."""
    m = RevGRU(5, 6, dtype=torch.float64, verify=True, backend="reference")
    x = torch.randn(50, 3, 5, dtype=torch.float64)
    out, h = m(x)
    gates = revgru_module.RevGRUCell.gates

    def perturbed(self, xp, hb, w_hh):
        gt = gates(self, xp, hb, w_hh)
        return gt._replace(g=gt.g * (1 + 1e-9))

    monkeypatch.setattr(revgru_module.RevGRUCell, "gates", perturbed)
    with pytest.raises(RuntimeError, match="reconstruction failed"):
        out.sum().backward()


@pytest.mark.parametrize("cls", CELLS)
def test_out_of_range_initial_state_raises(cls):
    m = cls(5, 6, dtype=torch.float64)
    x = torch.randn(3, 2, 5, dtype=torch.float64)
    big = random_state(cls, 1, 2, 6)
    big = big * 0 + 2.0 ** 33 if isinstance(big, torch.Tensor) else (big[0], big[1] * 0 + 2.0 ** 33)
    with pytest.raises(OverflowError, match="2\\*\\*32"):
        m(x, big)
    nan = random_state(cls, 1, 2, 6)
    nan = nan * float("nan") if isinstance(nan, torch.Tensor) else (nan[0] * float("nan"), nan[1])
    with pytest.raises(ValueError, match="non-finite"):
        m(x, nan)


def test_forward_matmul_precision_is_replayed_in_backward(monkeypatch):
    """The float32 matmul precision (TF32/bf16 or IEEE) changed between forward and backward
    (spec §6 test 8) is set back to the forward's for the reverse gates, then restored."""
    m = RevGRU(5, 6, verify=True, backend="reference")
    out, _ = m(torch.randn(30, 3, 5))
    forward = matmul_precision()
    seen = set()
    gates = revgru_module.RevGRUCell.gates

    def recording(self, xp, hb, w_hh):
        seen.add(matmul_precision())
        return gates(self, xp, hb, w_hh)

    monkeypatch.setattr(revgru_module.RevGRUCell, "gates", recording)
    torch.set_float32_matmul_precision("medium")
    changed = matmul_precision()
    try:
        assert changed != forward
        out.sum().backward()
        assert seen == {forward}
        assert matmul_precision() == changed
    finally:
        torch.set_float32_matmul_precision("highest")


@pytest.mark.parametrize("cls", CELLS)
def test_autocast_does_not_break_reversal(cls):
    """Under autocast the forward's gates would be bf16 while backward (outside the autocast
    region) recomputes them in float32; reversible modules opt out of autocast."""
    rev, store = pair(cls, dtype=torch.float32)
    x = torch.randn(20, 3, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = grads(rev, x)
    want = grads(store, x)
    assert got["output"].dtype == torch.float32 and torch.equal(got["output"], want["output"])
    assert_close_all(got, want, 1e-5)


@pytest.mark.parametrize("memory", ["reversible", "store"])
def test_non_finite_input_or_weight_raises(memory):
    m = RevGRU(5, 6, memory=memory)
    x = torch.randn(4, 2, 5)
    x[2, 1, 3] = float("nan")
    with pytest.raises(ValueError, match="non-finite values in input"):
        m(x)
    with torch.no_grad():
        m.weight_hh2_l0[0, 0] = float("inf")
    with pytest.raises(ValueError, match="weight_hh2_l0"):
        m(torch.randn(4, 2, 5))


def test_half_precision_is_rejected():
    m = RevGRU(5, 6).to(torch.bfloat16)
    with pytest.raises(TypeError, match="float32 and float64"):
        m(torch.randn(3, 2, 5, dtype=torch.bfloat16))


def test_backward_twice_raises():
    m = RevGRU(5, 6)
    out, _ = m(torch.randn(4, 2, 5))
    out.sum().backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="already backpropagated"):
        out.sum().backward()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"hidden_size": 5}, ValueError, "even"),
    ({"forget_bits": 11}, ValueError, "forget_bits"),
    ({"forget_bits": -1}, ValueError, "forget_bits"),
    ({"forget_bits": True}, ValueError, "forget_bits"),
    ({"memory": "recompute"}, ValueError, "memory"),
    ({"chunk_size": 0}, ValueError, "chunk_size"),
    ({"chunk_size": MAX_CHUNK_OPS}, ValueError, "chunk_size"),
    ({"verify": 1}, TypeError, "verify"),
    ({"backend": "nope"}, ValueError, "backend"),
    ({"bidirectional": True}, ValueError, "bidirectional"),
])
@pytest.mark.parametrize("cls", CELLS)
def test_bad_arguments(cls, kwargs, error, match):
    args = {"input_size": 3, "hidden_size": 4, **kwargs}
    with pytest.raises(error, match=match):
        cls(**args)


def test_unimplemented_backend_is_unavailable():
    """A backend without glue for a cell type refuses it by name (glue is found by exact type)."""
    class Other(revgru_module.RevGRUCell):
        pass
    with pytest.raises(BackendUnavailable, match="does not implement the revgru cell|is not available"):
        resolve("cpu", Other(3, 4), torch.device("cpu"))


# -- layout ---------------------------------------------------------------------------------
@pytest.mark.parametrize("cls, blocks", [(RevGRU, 3), (RevLSTM, 5)])
def test_parameter_count_and_names(cls, blocks):
    """blocks·G·(X + G) weights + blocks·G biases per half (spec §1: 6G(X+G)+6G for RevGRU)."""
    X, H = 7, 10
    G = H // 2
    m = cls(X, H, num_layers=2)
    assert n_params(m) == 2 * blocks * G * (X + G + 1) + 2 * blocks * G * (H + G + 1)
    assert "weight_hh2_l1" in m.state_dict()
    assert n_params(cls(X, H, bias=False)) == 2 * blocks * G * (X + G)


@pytest.mark.parametrize("cls", CELLS)
def test_batch_first_and_unbatched(cls):
    m = cls(5, 6, dtype=torch.float64)
    x = torch.randn(7, 3, 5, dtype=torch.float64)
    out, state = m(x)
    bf = cls(5, 6, batch_first=True, dtype=torch.float64)
    bf.load_state_dict(m.state_dict())
    out_bf, state_bf = bf(x.transpose(0, 1))
    assert torch.equal(out_bf.transpose(0, 1), out)
    out1, state1 = m(x[:, 0])
    assert rel_err(out1, out[:, 0]) < 1e-12
    assert rel_err(as_tuple(state1)[0], as_tuple(state)[0][:, 0]) < 1e-12


# -- accounting and memory ------------------------------------------------------------------
def test_information_grows_with_forget_bits():
    """On the same weights and input, a looser forgetting limit stores more bits."""
    x = torch.randn(50, 4, 5, dtype=torch.float64)
    bits = []
    for k in (1, 2, 3, 5, 10):
        torch.manual_seed(0)
        m = RevGRU(5, 6, dtype=torch.float64, forget_bits=k)
        m(x)
        bits.append(m.last_stats.optimal_bits)
        assert m.last_stats.optimal_bits <= m.last_stats.used_bits
    assert bits == sorted(bits) and bits[0] < bits[-1]




@pytest.mark.parametrize("cls", CELLS)
def test_activation_memory_constant_in_T(cls):
    """Saved tensors (the buffer arena included) at T = 100 and T = 4000: ``store`` grows
    linearly in T, reversible grows only by the buffer's information content."""
    k, B = 3, 8
    rev, store = pair(cls, dtype=torch.float32, forget_bits=k)
    r, s, used, optimal = {}, {}, {}, {}
    for T in (100, 4000):
        x = torch.randn(T, B, 5)
        r[T] = activation_bytes(rev, x)
        used[T], optimal[T] = rev.last_stats.used_bits, rev.last_stats.optimal_bits
        s[T] = activation_bytes(store, x)
    assert s[4000] > 35 * s[100]
    # everything but the buffer is O(1) in T
    assert r[4000] - used[4000] // 8 == r[100] - used[100] // 8
    # the buffer grows by its information content: words hold >= 53 - k of 64 bits, plus one
    # count byte per element per chunk of 64 steps
    elements = B * 3
    growth_bound = (optimal[4000] - optimal[100]) * 64 / (53 - k) + 64 * elements + 8 * elements * (4000 - 100) / 64
    assert used[4000] - used[100] <= growth_bound
    assert s[4000] > 20 * r[4000]


@pytest.mark.parametrize("cls", [RevGRU, RevLSTM])
def test_autocast_is_said_once_and_changes_nothing(cls):
    """Under autocast the reversible cells run in their own dtype (exact reversal needs the same
    gate arithmetic both ways): one warning per module, and the float32 result."""
    torch.manual_seed(0)
    m = cls(4, 8)
    x = torch.randn(6, 2, 4)
    want = m(x)[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = [m(x)[0] for _ in range(2)]
    said = [w for w in caught if "under autocast" in str(w.message)]
    assert len(said) == 1 and "bfloat16" in str(said[0].message)
    assert all(torch.equal(g, want) for g in got)
