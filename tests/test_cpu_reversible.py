"""RevGRU and RevLSTM on the compiled executor (``backend="cpu"``: csrc/include/revrnn/reversible.h).

* The integer core (csrc/include/revrnn/fixed.h) against the torch reference buffer, bit for bit
  given the same quantised gates, through :class:`~revrnn.cells.reversible.executor.CpuBuffer`.
* Whole stacks against ``backend="reference"`` (the executor's σ and tanh are libmvec's: close,
  not bit-identical), exact reconstruction (``verify=True`` everywhere, 10⁵ steps once), two
  threads, ``memory="store"`` (the reference half-updates around the compiled integer core:
  bit-identical to the reference's store), and the bindings' argument checks.

The gradient of a reversible module is the straight-through gradient of spec §3.2, not the
derivative of the quantised function, so gradcheck does not apply; it is checked against
autograd through the same quantised forward (``memory="store"``) on the reference backend, which
``tests/test_reversible.py`` holds to the float64 definition."""
from __future__ import annotations

import os
import time

import pytest
import torch

import revrnn
from revrnn.cells.reversible import executor as glue
from revrnn.cells.reversible.executor import CpuBuffer
from revrnn.nn import RevGRU, RevLSTM

from reversible_checks import (CORE_CASES, CLOSE, FLOOR, check_core_flags_an_inexact_reverse,
                               check_core_step_by_step, compare_backends, inputs, run, saturate_forget_gates)
from utils import assert_close_all, malloc_calls

REASON = revrnn.available_backends()["cpu"]
# CI sets REVRNN_REQUIRE_EXT=1: there a missing extension must fail the tests, not skip them.
pytestmark = pytest.mark.skipif(REASON is not None and os.environ.get("REVRNN_REQUIRE_EXT") != "1",
                                reason=f"backend 'cpu' unavailable: {REASON}")

CELLS = [RevGRU, RevLSTM]


# -- the integer core -----------------------------------------------------------------------
@pytest.mark.parametrize("k, shape, masks, update", CORE_CASES)
def test_core_matches_reference_step_by_step_and_reverse(k, shape, masks, update):
    check_core_step_by_step(CpuBuffer, k, shape, masks, update)


def test_core_flags_an_inexact_reverse():
    check_core_flags_an_inexact_reverse(CpuBuffer)


# -- whole stacks ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("forget_bits", [0, 1, 3, 10])
@pytest.mark.parametrize("cls", CELLS)
def test_executor_is_close_to_reference(cls, forget_bits, dtype, poison):
    """Two layers, packed variable lengths, several chunks (chunk_size=4, T=9), spilling words."""
    compare_backends(cls, "cpu", forget_bits, 2, dtype, T=9, lengths=[9, 4, 1])


@pytest.mark.parametrize("cls", CELLS)
def test_odd_sizes_one_row_no_bias(cls, poison):
    """A half of 23 units (no vector width divides it), one row, one layer; and two layers
    without biases (the upper layer's projection has none to add)."""
    compare_backends(cls, "cpu", 10, 1, torch.float64, hidden=46, T=5, lengths=[5])
    compare_backends(cls, "cpu", 0, 2, torch.float64, T=5, bias=False)


@pytest.mark.parametrize("cls, forget_bits, dtype", [(RevGRU, 3, torch.float32), (RevLSTM, 10, torch.float64)])
def test_reconstructs_100000_steps_exactly(cls, forget_bits, dtype):
    """10⁵ steps with spilling words: backward reconstructs the initial state bit for bit
    (verify=True raises otherwise) and empties the buffer, in seconds."""
    m = cls(3, 8, forget_bits=forget_bits, dtype=dtype, verify=True, backend="cpu")
    saturate_forget_gates(m)
    x, hx = inputs(cls, 1, 2, 8, 100_000, dtype)
    x = x[..., :3].contiguous()
    start = time.perf_counter()
    result = run(m, x, hx, None)
    elapsed = time.perf_counter() - start
    assert all(torch.isfinite(v).all() for v in result.values())
    assert m.last_stats.used_bits > 64 * 2 * 4 * 100  # spilled words far beyond the current ones
    assert elapsed < 120, f"10^5 steps took {elapsed:.0f} s"


@pytest.mark.parametrize("cls", CELLS)
def test_two_threads_split_the_units(cls, two_threads, poison):
    """A step big enough for a team of two (csrc/cpu/device.h: kParallelWork), halves of 72
    units (slices of 48 and 24), packed rows, two layers with locked dropout: close to the
    reference, and exact reversal even when backward runs with another thread count (the plan
    keeps the forward's)."""
    H, B = 144, 20
    kw = dict(num_layers=2, forget_bits=3, dtype=torch.float64, verify=True, chunk_size=3)
    ref = cls(4, H, backend="reference", **kw)
    cpu = cls(4, H, backend="cpu", **kw)
    cpu.load_state_dict(ref.state_dict())
    x, hx = inputs(cls, 2, B, H, 7, torch.float64)
    lengths = [7, 3, 6, 1, 7, 5, 2, 7, 4, 7, 6, 1, 2, 7, 3, 5, 7, 7, 2, 6]
    assert_close_all(run(cpu, x, hx, lengths), run(ref, x, hx, lengths), CLOSE[torch.float64])
    cpu.train().dropout = 0.3
    out, _ = cpu(x)
    torch.set_num_threads(1)
    out.sum().backward()  # verify=True: exact, or it raises


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", CELLS)
def test_store_is_the_reference_store(cls, dtype):
    """memory="store" on the cpu backend runs the reference half-updates with the compiled
    integer core (CpuBuffer): bit for bit the reference's store, gradients included."""
    kw = dict(num_layers=2, forget_bits=3, dtype=dtype, memory="store", chunk_size=3)
    ref = cls(4, 8, backend="reference", **kw)
    saturate_forget_gates(ref)
    cpu = cls(4, 8, backend="cpu", **kw)
    cpu.load_state_dict(ref.state_dict())
    x, hx = inputs(cls, 2, 3, 8, 7, dtype)
    want, got = run(ref, x, hx, [7, 2, 5]), run(cpu, x, hx, [7, 2, 5])
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert cpu.last_stats == ref.last_stats


@pytest.mark.parametrize("forget_bits", [0, 3])
def test_verify_catches_a_perturbed_reverse(monkeypatch, forget_bits):
    """Reverse gates from a perturbed projection break exactness: with a buffer its check
    fails, without one (k = 0) verify=True catches the wrong initial state."""
    m = RevLSTM(4, 6, dtype=torch.float64, forget_bits=forget_bits, verify=True, backend="cpu")
    out, _ = m(torch.randn(20, 2, 4, dtype=torch.float64))
    linear = glue.linear
    monkeypatch.setattr(glue, "linear", lambda x, w, b: linear(x, w, b) + 1e-3)
    with pytest.raises(RuntimeError, match="reconstruction failed"):
        out.sum().backward()


def test_auto_runs_the_executor_on_cpu(monkeypatch):
    """auto picks the executor for reversible modules on CPU (it runs whole chunks)."""
    calls = []
    forward = glue.CompiledHalves._run

    def counted(self, *args, **kw):
        calls.append(1)
        return forward(self, *args, **kw)
    monkeypatch.setattr(glue.CompiledHalves, "_run", counted)
    m = RevGRU(4, 6, chunk_size=4)
    out, _ = m(torch.randn(10, 2, 4))
    out.sum().backward()
    assert len(calls) == 2 * 3  # three chunks, forward and reverse


@pytest.mark.parametrize("cls", CELLS)
def test_empty_batch(cls):
    """No rows: nothing to run, as torch.nn (an empty output, zero weight gradients)."""
    m = cls(3, 4, backend="cpu")
    x = torch.randn(5, 0, 3, requires_grad=True)
    out, _ = m(x)
    out.sum().backward()
    assert out.shape == (5, 0, 4)
    assert all(p.grad is not None and not p.grad.any() for p in m.parameters())


ALLOCATIONS = r"""
import ctypes, torch
import revrnn.cells.reversible.executor as glue
from revrnn.nn import RevLSTM
calls = ctypes.CDLL(None).revrnn_test_malloc_calls
inside = [0]
for name in ("rev_forward_chunk", "rev_backward_chunk"):  # count inside the C++ calls only
    def counted(*args, _f=getattr(glue.CPU.module, name), **kw):
        before = calls()
        _f(*args, **kw)
        inside[0] += calls() - before
    setattr(glue.CPU.module, name, counted)
torch.set_num_threads(2)
m = RevLSTM(8, 128, backend="cpu", chunk_size=64)  # B = 16: a team of two threads
counts = []
for T in (4, 4, 64, 64):  # one chunk each; the first call of a size starts the team and the caches
    x = torch.randn(T, 16, 8, requires_grad=True)
    inside[0] = 0
    out, _ = m(x)
    out.sum().backward()
    counts.append(inside[0])
print(counts)
"""


def test_the_reversible_loop_allocates_nothing(tmp_path):
    """malloc, counted by an interposed malloc inside the executor's calls, is called as often
    for a chunk of 64 steps of a reversible stack, forward and backward, as for one of 4 (BLAS
    and thread team included): the C++ loop allocates nothing per step (the glue allocates per
    chunk)."""
    _, short, _, long = malloc_calls(tmp_path, ALLOCATIONS)
    assert short > 0  # the counter sees the calls (the bindings build their argument vectors)
    assert long == short, f"malloc calls: {short} for 4 steps, {long} for 64"


def test_bindings_refuse_bad_arguments():
    C = glue.CPU.module
    args = dict(dtype=C.DType.float64, threads=1, K=1, B=1, G=2, forget_bits=3, max_forget=0.875, xp0=8, mask=0,
                y=8, layers=[[0] * 23], buffer=[0] * 6, depth=1, spill_at=1, op=0, scratch=[0] * 7)
    with pytest.raises(ValueError, match="'cell' must be one of revgru, revlstm, got 'gru'"):
        C.rev_forward_chunk("gru", **args)
    with pytest.raises(ValueError, match="must list 23 addresses, got 3"):
        C.rev_forward_chunk("revgru", **{**args, "layers": [[0] * 3]})
    with pytest.raises(ValueError, match="forget_bits must be in \\[0, 10\\], got 11"):
        C.rev_forward_chunk("revgru", **{**args, "forget_bits": 11})
    with pytest.raises(ValueError, match="argument 'w_hh1' is a null pointer"):
        C.rev_forward_chunk("revgru", **args)
    with pytest.raises(ValueError, match="'buffer' must list 6 addresses"):
        C.rev_multiply(1, 1, 8, 8, 0, 0, 8, [0] * 5, 1, 1, 0)
    with pytest.raises(ValueError, match="argument 'buffer bad' is a null pointer"):
        C.rev_divide(1, 1, 8, 8, 0, 0, 8, [8, 8, 8, 0, 0, 0], 1, 1, 0)
