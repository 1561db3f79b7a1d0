"""The binomial (revolve) checkpoint schedule: budget, optimality, and the engine running it."""
from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from hypothesis import given, settings, strategies as st

import revrnn
from revrnn.backends.reference import ReferenceBackend
from revrnn.accounting import SavedTensorCounter
from revrnn.schedule import binomial, binomial_advances, binomial_cost, fixed_cost, repetitions
from utils import assert_close_all, grads

F64 = torch.float64


@lru_cache(maxsize=None)
def fewest_advances(length: int, slots: int) -> int:
    """Brute force over every split: the minimum untaped steps to reverse ``length`` steps."""
    if length == 1:
        return 0
    if slots == 1:
        return length - 1 + fewest_advances(length - 1, 1)
    return min(m + fewest_advances(length - m, slots - 1) + fewest_advances(m, slots) for m in range(1, length))


def simulate(T: int, slots: int) -> tuple[int, list[int], int]:
    """Run the actions on positions only: advances, order of reversed steps, most slots held."""
    held, current, advances, order, most = set(), 0, 0, [], 0
    for a in binomial(T, slots):
        if a.op == "store":
            assert current == a.a
            held.add(a.a)
            most = max(most, len(held))
        elif a.op == "advance":
            assert current == a.a < a.b
            advances, current = advances + a.b - a.a, a.b
        elif a.op == "restore":
            assert a.a in held
            current = a.a
        elif a.op == "reverse":
            assert current == a.a
            order.append(a.a)
            current = None
        else:
            held.remove(a.a)
    return advances, order, most


@given(st.integers(1, 70), st.integers(1, 8))
@settings(max_examples=300, deadline=None)
def test_schedule_reverses_every_step_within_budget_with_fewest_advances(T, slots):
    advances, order, most = simulate(T, slots)
    assert order == list(range(T - 1, -1, -1))
    assert most <= slots
    assert advances == binomial_advances(T, slots) == fewest_advances(T, slots)


@pytest.mark.parametrize("slots, per_step, r", [(2, 29.82, 44), (3, 13.155, 17), (5, 7.284, 8), (10, 4.636, 4),
                                                (20, 3.747, 3), (50, 2.948, 2), (100, 2.898, 2), (1000, 1.999, 1)])
def test_closed_form_counts_at_T_1000(slots, per_step, r):
    # specs/memory.md §1.2: forward evaluations per step for T = 1000 (advances + one taped run).
    cost = binomial_cost(1000, slots)
    assert cost.factor == pytest.approx(per_step, abs=1e-3)
    assert cost.repetitions == repetitions(1000, slots) == r


def test_costs_reported():
    assert fixed_cost(100, 10) == fixed_cost(100, 10)
    assert (fixed_cost(100, 10).slots, fixed_cost(100, 10).factor, fixed_cost(100, 10).tape_steps) == (10, 2.0, 10)
    m = revrnn.nn.GRU(3, 4, memory="recompute", checkpoint_slots=5)
    assert m.checkpoint_schedule(1000) == binomial_cost(1000, 5)
    assert revrnn.nn.GRU(3, 4, memory="recompute").checkpoint_schedule(100) == fixed_cost(100, 10)
    assert revrnn.nn.GRU(3, 4).checkpoint_schedule(100) is None


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None])
def test_bad_slots(bad):
    with pytest.raises(ValueError, match="checkpoint_slots must be a positive int"):
        list(binomial(10, bad))


def gru(**kw):
    return revrnn.nn.GRU(4, 5, num_layers=2, bidirectional=True, dtype=F64, backend="reference", **kw)


def lstm(**kw):
    return revrnn.nn.LSTM(4, 6, proj_size=3, num_layers=2, dtype=F64, backend="reference", **kw)


@pytest.mark.parametrize("make", [gru, lstm])
@pytest.mark.parametrize("slots", [1, 2, 3, 5, 13, 40])
def test_binomial_recompute_equals_store(make, slots):
    torch.manual_seed(0)
    x = torch.randn(13, 3, 4, dtype=F64)
    store = make(memory="store")
    other = make(memory="recompute", checkpoint_slots=slots)
    other.load_state_dict(store.state_dict())
    assert_close_all(grads(other, x), grads(store, x), 1e-12)


def test_binomial_with_variable_lengths_and_retain_graph():
    torch.manual_seed(0)
    lengths = torch.tensor([2, 9, 5])
    x = torch.randn(9, 3, 4, dtype=F64, requires_grad=True)
    store, other = gru(), gru(memory="recompute", checkpoint_slots=3)
    other.load_state_dict(store.state_dict())
    pack = lambda: torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
    g_store = torch.autograd.grad(store(pack())[0].data.sum(), x)[0]
    out = other(pack())[0].data.sum()
    g1 = torch.autograd.grad(out, x, retain_graph=True)[0]
    g2 = torch.autograd.grad(out, x)[0]  # rebuilds the forward part from the initial state
    assert (g1 - g_store).abs().max() < 1e-12 and (g2 - g_store).abs().max() < 1e-12


class Counting(ReferenceBackend):
    def __init__(self):
        super().__init__()
        self.forward_steps = self.backward_steps = 0

    def forward_chunk(self, cell, p, extras, chunk, state, keep):
        self.forward_steps += chunk.xp.shape[0]
        return super().forward_chunk(cell, p, extras, chunk, state, keep)

    def backward_chunk(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        self.backward_steps += chunk.xp.shape[0]
        return super().backward_chunk(cell, p, extras, chunk, residuals, grad_out, grad_state)


@pytest.mark.parametrize("T, slots", [(1, 1), (7, 1), (40, 3), (100, 6)])
def test_engine_runs_exactly_the_schedule(monkeypatch, T, slots):
    backend = Counting()
    monkeypatch.setattr("revrnn.nn.base.resolve", lambda *a: backend)
    m = revrnn.nn.GRU(3, 4, memory="recompute", checkpoint_slots=slots)
    out, h = m(torch.randn(T, 2, 3))
    (out.sum() + h.sum()).backward()
    # The reference tapes by re-running in backward_chunk, so the forward's taped last step
    # is one forward_chunk step on top of the schedule's advances.
    assert backend.forward_steps == binomial_advances(T, slots) + 1
    assert backend.backward_steps == T


@pytest.mark.parametrize("slots", [2, 4, 8])
def test_binomial_activation_memory_is_flat_in_T_and_within_budget(slots):
    # Peak of what is kept for backward, over forward and backward: `slots` states plus
    # two one-step chunks' residuals (the forward's tape and the step being differentiated),
    # whatever T. A one-step chunk's residuals are a step of store's (`one_step`: its
    # activations and one state) plus its end state.
    torch.set_num_threads(1)
    B, H = 4, 16
    state_bytes = B * H * 4
    peaks = []
    for T in (32, 256):
        m = revrnn.nn.GRU(8, H, memory="recompute", checkpoint_slots=slots)
        x = torch.randn(T, B, 8)
        with SavedTensorCounter([*m.parameters(), x]) as c:
            out, h = m(x)
            torch.autograd.backward([out, h], [torch.ones_like(out), torch.ones_like(h)])
        peaks.append(c.peak_bytes)
        store = revrnn.nn.GRU(8, H)
        with SavedTensorCounter([*store.parameters(), x]) as s:
            store(x)
            one_step = s.peak_bytes / T
    assert peaks[0] == peaks[1]
    assert peaks[1] <= slots * state_bytes + 2 * (one_step + state_bytes)
