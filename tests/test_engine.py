"""The sequence engine: memory strategies, backend registry, and cell-agnosticism."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import revrnn
from revrnn.backends import BackendUnavailable, resolve
from revrnn.backends.reference import ReferenceBackend
from revrnn.cells.base import CellSpec, ParamSpec, flat_linear, linear
from revrnn.accounting import activation_bytes
from revrnn.nn.base import RecurrentBase
from utils import assert_recompute_matches_store, gradcheck_module, grads, rel_err

F64 = torch.float64


def gru(**kw):
    return revrnn.nn.GRU(4, 5, num_layers=2, bidirectional=True, dtype=F64, backend="reference", **kw)


def lstm(**kw):
    return revrnn.nn.LSTM(4, 6, proj_size=3, num_layers=2, dtype=F64, backend="reference", **kw)


@pytest.mark.parametrize("make", [gru, lstm])
def test_recompute_equals_store(make):
    x = torch.randn(13, 3, 4, dtype=F64)
    # checkpoint every 1 step, an uneven split, the default √T, and one chunk longer than T
    assert_recompute_matches_store(make, x, every=(1, 5, None, 50))


@pytest.mark.parametrize("memory", ["store", "recompute"])
@pytest.mark.parametrize("make", [gru, lstm])
def test_gradcheck(make, memory):
    gradcheck_module(make(memory=memory, checkpoint_every=2), torch.randn(5, 2, 4, dtype=F64))


def test_recompute_with_packed_sequence_matches_store():
    torch.manual_seed(0)
    lengths = torch.tensor([2, 9, 5])
    x = torch.randn(9, 3, 4, dtype=F64)
    results = []
    for memory in ("store", "recompute"):
        torch.manual_seed(1)
        m = gru(memory=memory, checkpoint_every=4)
        xi = x.clone().requires_grad_()
        out, h = m(pack_padded_sequence(xi, lengths, enforce_sorted=False))
        padded, _ = pad_packed_sequence(out)
        (padded.sum() + h.pow(2).sum()).backward()
        results.append((padded.detach(), h.detach(), xi.grad, [p.grad for p in m.parameters()]))
    (o1, h1, g1, p1), (o2, h2, g2, p2) = results
    assert rel_err(o2, o1) < 1e-12 and rel_err(h2, h1) < 1e-12 and rel_err(g2, g1) < 1e-12
    assert all(rel_err(a, b) < 1e-12 for a, b in zip(p2, p1))


def test_recompute_supports_retain_graph():
    m = gru(memory="recompute")
    x = torch.randn(6, 2, 4, dtype=F64, requires_grad=True)
    out, _ = m(x)
    (g1,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    (g2,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g1, g2)


def test_recompute_activation_memory_grows_as_sqrt_T():
    # store keeps every step's graph (linear in T); recompute keeps √T states (slope 1/2).
    sizes = {}
    for T in (64, 1024):
        x = torch.randn(T, 4, 8)
        for memory in ("store", "recompute"):
            sizes[memory, T] = activation_bytes(revrnn.nn.GRU(8, 16, memory=memory), x)
    assert sizes["store", 1024] / sizes["store", 64] == pytest.approx(16, rel=0.05)
    assert 3 <= sizes["recompute", 1024] / sizes["recompute", 64] <= 5
    assert sizes["recompute", 1024] < sizes["store", 1024] / 20


class Elman(CellSpec):
    """A cell the engine has never heard of: ``h' = tanh(W x + U h + b)``, plus a step counter."""

    name = "elman"

    @property
    def state_sizes(self):
        return (self.hidden_size, 1)

    def param_specs(self):
        return [ParamSpec("weight_ih", (self.hidden_size, self.input_size), recurrent=False),
                ParamSpec("weight_hh", (self.hidden_size, self.hidden_size)),
                ParamSpec("bias", (self.hidden_size,), recurrent=False)]

    def project(self, p, x, mask, training):
        return flat_linear(x, p["weight_ih"], p["bias"])

    def step(self, p, xp, state, t, extras):
        h, count = state
        return torch.tanh(xp + linear(h, p["weight_hh"])), count + 1


class ElmanRNN(RecurrentBase):
    def __init__(self, input_size, hidden_size, **kw):
        super().__init__(lambda n: Elman(n, hidden_size), input_size, hidden_size, **kw)


def test_engine_runs_a_new_cell_without_changes():
    torch.manual_seed(0)
    x = torch.randn(7, 3, 2, dtype=F64)
    m = ElmanRNN(2, 4, dtype=F64, bidirectional=True)
    out, (h, count) = m(x)
    assert torch.equal(count, torch.full((2, 3, 1), 7.0, dtype=F64))
    # against a hand-written loop of the same equations (forward direction)
    hh = torch.zeros(3, 4, dtype=F64)
    for t in range(7):
        hh = torch.tanh(x[t] @ m.weight_ih_l0.T + m.bias_l0 + hh @ m.weight_hh_l0.T)
    assert rel_err(h[0], hh) < 1e-14
    gradcheck_module(ElmanRNN(2, 3, dtype=F64, memory="recompute", checkpoint_every=2), x[:4])
    assert_recompute_matches_store(lambda **kw: ElmanRNN(2, 4, dtype=F64, **kw), x)


def test_backend_registry():
    cell = revrnn.cells.GRUCell(3, 4)
    assert resolve("reference", cell, torch.device("cpu")).name == "reference"
    assert resolve("auto", cell, torch.device("cpu")).name in ("reference", "cpu")
    with pytest.raises(ValueError, match="backend must be one of.*'tpu'"):
        revrnn.nn.GRU(3, 4, backend="tpu")
    reasons = revrnn.available_backends("cpu")
    assert reasons["reference"] is None
    for name, reason in reasons.items():
        if reason is not None:
            with pytest.raises(BackendUnavailable, match=name):
                revrnn.nn.GRU(3, 4, backend=name)(torch.randn(2, 1, 3))


def test_store_and_recompute_agree_in_float32():
    torch.manual_seed(3)
    x = torch.randn(40, 2, 4)
    a = revrnn.nn.LSTM(4, 8, backend="reference")
    b = revrnn.nn.LSTM(4, 8, backend="reference", memory="recompute")
    b.load_state_dict(a.state_dict())
    ga, gb = grads(a, x), grads(b, x)
    # The forward runs the same float32 operations in the same order: bit-identical.
    for k in ("output", "state0", "state1"):
        assert torch.equal(ga[k], gb[k]), k
    # Gradients sum the same per-step terms in another order (per chunk, then across
    # chunks): ~1 ulp per addition over 40 steps.
    for k in ga:
        assert rel_err(gb[k], ga[k]) < 1e-5, k


class _Records(ReferenceBackend):
    """The reference's chunks run through the engine's one node (as every non-autograd backend),
    recording the outputs they return."""

    autograd_steps = False

    def __init__(self):
        super().__init__()
        self.outputs = []

    def forward_chunk(self, cell, p, extras, chunk, state, keep):
        out, end, res = super().forward_chunk(cell, p, extras, chunk, state, keep)
        self.outputs.append(out)
        return out, end, res


class _KeepsOutput(_Records):
    """Saves each chunk's output among its residuals and checks it in backward, as a backend
    whose residuals include the outputs would read them."""

    def forward_chunk(self, cell, p, extras, chunk, state, keep):
        out, end, res = super().forward_chunk(cell, p, extras, chunk, state, keep)
        return out, end, (None if res is None else (*res, out))

    def backward_chunk(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        *res, out = residuals
        fresh, _, _ = ReferenceBackend.forward_chunk(self, cell, p, extras, chunk, tuple(res), False)
        torch.testing.assert_close(out, fresh, rtol=0, atol=0)  # what it saved is what it computed
        return super().backward_chunk(cell, p, extras, chunk, tuple(res), grad_out, grad_state)


@pytest.mark.parametrize("chunks", [1, 3])
@pytest.mark.parametrize("keeps_output", [False, True])
def test_one_chunks_output_is_returned_uncopied_unless_a_residual_holds_it(chunks, keeps_output):
    """A sequence run as one chunk returns that chunk's output itself, no copy; where the backend
    saved it as a residual it is copied, so changing the returned output in place reaches neither
    the residuals nor the gradients."""
    from revrnn.engine import Plan, run_sequence

    torch.manual_seed(0)
    m = revrnn.nn.GRU(4, 5, dtype=F64, backend="reference")
    cell, p = m.cells[0], m.cell_params(0)
    recurrent = {s.name: p[s.name] for s in cell.param_specs() if s.recurrent}
    x = torch.randn(6, 3, 4, dtype=F64)
    backend = _KeepsOutput() if keeps_output else _Records()
    plan = Plan(cell=cell, backend=backend, memory="store", checkpoint_every=-(-6 // chunks),
                extras=cell.extras(p, 3, x, True))
    xp = cell.project(p, x, None, True)
    out, _ = run_sequence(plan, xp, cell.initial_state(3, x), recurrent)
    assert len(backend.outputs) == chunks
    shared = out.untyped_storage().data_ptr() == backend.outputs[0].untyped_storage().data_ptr()
    assert shared == (chunks == 1 and not keeps_output)
    w = torch.randn_like(out)
    want = torch.autograd.grad((2 * out * w).sum(), list(recurrent.values()), retain_graph=True)
    out.mul_(2)  # after the forward: backward must not see it
    got = torch.autograd.grad((out * w).sum(), list(recurrent.values()))
    for g, h in zip(got, want):
        torch.testing.assert_close(g, h, rtol=1e-12, atol=1e-12)
