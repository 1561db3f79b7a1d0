"""The compiled CPU backend (revrnn._C) against the reference backend.

Tolerances (per entry, tests/utils.rel_err): both backends evaluate the same formulas; they
differ only in rounding (libmvec's exp/tanh vs torch's, GEMM summation order, the order of the
sums over steps), accumulated over 37 steps and two layers. In float64 that is ~1e-15 relative,
so 1e-10 leaves a wide margin while any real error (a wrong gate, a missed mask) is O(1). In
float32 an element carries ~1e-6 (a few ulps of 2^-24 ≈ 6e-8 compounded by the recurrence); a
bias gradient entry is a sum of T·B = 111 such terms, added in another order here (one reduction
per chunk) than by autograd (step by step), so where they partly cancel it shows up to
~√111 · 1e-6 ≈ 1e-5 of itself: 3e-5.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils._python_dispatch import TorchDispatchMode

import revrnn
from revrnn.backends import BackendUnavailable, Chunk, get_backend, resolve
from revrnn.cells import cases
from revrnn.cells.base import CellSpec
from revrnn.cells.lstm import LSTMCell
from utils import (NO_PROJECTION_MODULES, assert_close_all, assert_glstm_closed_steps_pass_through,
                   assert_glstm_sparse_matches, assert_store_keeps_no_projection,
                   assert_low_precision, floor_for, gradcheck_module, grads, malloc_calls, rel_err, rounding_spread)

REASON = revrnn.available_backends()["cpu"]
# CI sets REVRNN_REQUIRE_EXT=1: there a missing extension must fail the tests, not skip them.
pytestmark = pytest.mark.skipif(REASON is not None and os.environ.get("REVRNN_REQUIRE_EXT") != "1",
                                reason=f"backend 'cpu' unavailable: {REASON}")

RTOL = {torch.float64: 1e-10, torch.float32: 3e-5}
T, B, I, H = 37, 3, 5, 45  # odd sizes: nothing lines up with a vector width


class Packed(nn.Module):
    """Runs ``rnn`` on a PackedSequence made from padded input, returns padded output."""

    def __init__(self, rnn: nn.Module, lengths: list[int]) -> None:
        super().__init__()
        self.rnn, self.lengths = rnn, lengths

    def forward(self, x, hx=None):
        out, state = self.rnn(pack_padded_sequence(x, self.lengths, enforce_sorted=False), hx)
        return pad_packed_sequence(out, total_length=x.shape[0])[0], state


#: the configurations the executor runs: id -> (revrnn.nn class, keywords); and those torch.nn has
MODULES = {"LSTM": ("LSTM", {}), "LSTM-proj": ("LSTM", dict(proj_size=7)), "GRU": ("GRU", {}), "GRU-reset-before": ("GRU", dict(reset_after=False)),
           "GRU1-nobias": ("GRU", dict(variant=1, bias=False)), "GRU2": ("GRU", dict(variant=2)),
           "GRU1-reset-before": ("GRU", dict(variant=1, reset_after=False)),
           "GRU2-reset-before-nobias": ("GRU", dict(variant=2, reset_after=False, bias=False)),
           "MGU1": ("MGU", dict(variant=1)), "MGU2-nobias": ("MGU", dict(variant=2, bias=False)),
           "GRU3": ("GRU", dict(variant=3)), "GRU3-reset-before-nobias": ("GRU", dict(variant=3, reset_after=False, bias=False)),
           "MGU3": ("MGU", dict(variant=3)),
           "KAFLSTM": ("KAFLSTM", dict(kaf_size=5)),
           "KAFGRU": ("KAFGRU", dict(kaf_size=6)),
           "LiGRU": ("LiGRU", {}), "MGU": ("MGU", {}),
           "GLSTM": ("GLSTM", dict(t_max=12.0, sigma_fraction=0.2)),  # gates open and closed within T
           "LiBRU-logprobs": ("LiBRU", dict(form="logprobs", batch_norm=False)),
           "RNN": ("RNN", {}), "RNN-relu-nobias": ("RNN", dict(nonlinearity="relu", bias=False)),
           "NRU": ("NRU", dict(memory_size=8, num_heads=2)),  # its own loop: revrnn/nru.h
           "NRU-relu-clamp": ("NRU", dict(memory_size=9, num_heads=4, use_relu=True, memory_clamp=2.5))}
# Not the LiBRU's probs form: its recurrent GEMM reads log(h + 1e-11), which amplifies the rounding
# of a state near 0 by 1/(h + 1e-11), so no fixed tolerance fits it; the conformance matrix runs it
# in float64 and test_libru_probs_float32 measures it against the reference's own error.
TWINS = ["LSTM", "LSTM-proj", "GRU", "RNN", "RNN-relu-nobias"]


def make(module: str, *args, **kw):
    name, own = MODULES[module]
    return getattr(revrnn.nn, name)(*args, **own, **kw)


def pair(module, dtype, memory="store", checkpoint_every=None, lengths=None, **kw):
    """The same module (same state_dict) on backend 'cpu' and on 'reference'."""
    ref = make(module, I, H, dtype=dtype, backend="reference", **kw)
    cpu = make(module, I, H, dtype=dtype, backend="cpu", memory=memory, checkpoint_every=checkpoint_every, **kw)
    cpu.load_state_dict(ref.state_dict())
    if lengths is not None:
        return Packed(cpu, lengths), Packed(ref, lengths)
    return cpu, ref


def state_sizes(module: str, hidden: int) -> list[int]:
    """The cell's state sizes: h first (proj_size features where the module projects)."""
    return list(make(module, I, hidden).cells[0].state_sizes)


def initial_state(module, dtype, layers=1, directions=1):
    state = tuple(torch.randn(layers * directions, B, size, dtype=dtype) for size in state_sizes(module, H))
    return state if len(state) > 1 else state[0]


CONFIGS = {
    "single": ({}, None),
    "stacked-bidirectional": ({"num_layers": 2, "bidirectional": True}, None),
    "packed": ({}, [T, 1, 23]),
    "packed-stacked-bidirectional": ({"num_layers": 2, "bidirectional": True}, [20, T, 9]),
}
MEMORY = {"store": ("store", None), "store-chunked": ("store", 5),
          "recompute": ("recompute", None), "recompute-every-step": ("recompute", 1)}


#: float32 is compared per entry at RTOL, except the KAF cells' and the NRU's. A KAF sums D
#: Gaussians with alternating weights |α| up to ~30 into a value of order 1, so its rounding is ~60
#: times a plain gate's in both backends; the NRU's memory grows without decay, so over 37 steps a
#: float32 rounding moves its gradients by up to 1e-2 (see rtol_for), as far as the float32
#: reference itself is from float64. test_kaf_float32 and test_nru_float32 hold them to the
#: reference's own float32 error instead.
OWN_ERROR = [m for m in MODULES if m.startswith(("KAF", "NRU"))]
DTYPES = [pytest.param(m, d, id=f"{m}-{name}") for m in MODULES for d, name in ((torch.float64, "f64"), (torch.float32, "f32"))
          if not (d == torch.float32 and m in OWN_ERROR)]


def rtol_for(module, ref, x, hx, want) -> float:
    """RTOL in float64, or for the NRU 8 times the reference's own spread under a one-rounding
    change of its weights (utils.rounding_spread): its memory has no decay and its L5 norm divides
    by the heads' scales, so over 37 steps and two layers such a change moves a gradient entry by
    up to ~4e-9 (measured: 1e-12 to 4e-9 with the seed), and the executor's distance from the
    reference was at most 3.2 times that spread in 24 runs. A real error is O(1) all the same."""
    rtol = RTOL[torch.float64]
    if MODULES[module][0] != "NRU":
        return rtol
    return max(rtol, 8 * rounding_spread(ref, x, hx, want, floor_for(torch.float64, rtol)))


@pytest.mark.parametrize("memory", MEMORY)
@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("module, dtype", DTYPES)
def test_matches_reference(module, dtype, config, memory, poison):
    kw, lengths = CONFIGS[config]
    cpu, ref = pair(module, dtype, *MEMORY[memory], lengths=lengths, **kw)
    x = torch.randn(T, B, I, dtype=dtype)
    hx = initial_state(module, dtype, kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1)
    got, want = grads(cpu, x, hx), grads(ref, x, hx)
    assert_close_all(got, want, RTOL[dtype] if dtype != torch.float64 else rtol_for(module, ref, x, hx, want))


@pytest.mark.parametrize("memory", ["store", "recompute"])
@pytest.mark.parametrize("module", MODULES)
def test_gradcheck(module, memory):
    hidden = 9 if "proj" in module else 4  # more units than the projection's 7
    m = make(module, 3, hidden, dtype=torch.float64, backend="cpu", memory=memory, checkpoint_every=2)
    hx = tuple(torch.randn(1, 2, size, dtype=torch.float64) for size in state_sizes(module, hidden))
    gradcheck_module(m, torch.randn(5, 2, 3, dtype=torch.float64), hx)


@pytest.mark.parametrize("module", TWINS)
def test_auto_prefers_cpu_and_matches_torch(module):
    """backend='auto' runs the module on the compiled backend, exactly torch.nn's in float64."""
    assert type(resolve("auto", LSTMCell(I, H), torch.device("cpu"))).__name__ == "CpuBackend"
    ours = make(module, I, H, num_layers=2, dtype=torch.float64)
    assert ours.cells[0] is not None and resolve("auto", ours.cells[0], torch.device("cpu")).name == "cpu"
    name, own = MODULES[module]
    theirs = getattr(nn, name)(I, H, num_layers=2, dtype=torch.float64, **own)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert_close_all(grads(ours, x), grads(theirs, x), 1e-10)


class Unlisted(CellSpec):
    """A cell type that no family lists."""

    name = "unlisted"


def test_unsupported_cell_raises():
    with pytest.raises(BackendUnavailable, match="backend 'cpu' does not implement the unlisted cell"):
        resolve("cpu", Unlisted(I, H), torch.device("cpu"))


def test_not_available_off_cpu():
    assert "CPU tensors only" in get_backend("cpu", torch.device("cpu")).availability(torch.device("meta"))


def chunk_args(dtype=torch.float64, K=4):
    cell = LSTMCell(I, H)
    p = {"weight_hh": torch.randn(4 * H, H, dtype=torch.float64, requires_grad=True)}
    state = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(2))
    return cell, p, Chunk(t0=0, xp=torch.randn(K, B, 4 * H, dtype=dtype), mask=None), state


def test_masked_chunk_matches_reference(poison):
    """Where the mask is false the state is kept, the output is exactly 0 and the gradients pass
    through; checked on one chunk, where padded outputs are not hidden by repacking."""
    K = 7
    cell, p, chunk, state = chunk_args(K=K)
    chunk.mask = torch.rand(K, B) < 0.5
    chunk.mask[:, 0], chunk.mask[:, 1] = True, False  # an always-valid and a never-valid row too
    cpu, ref = get_backend("cpu", torch.device("cpu")), get_backend("reference", torch.device("cpu"))
    want_out, want_end, ref_res = ref.forward_chunk(cell, p, {}, chunk, state, keep=True)
    want = {"output": want_out, "h": want_end[0], "c": want_end[1]}
    for keep in (False, True):  # without residuals (recompute's forward), then with them
        out, end, res = cpu.forward_chunk(cell, p, {}, chunk, state, keep=keep)
        assert_close_all({"output": out, "h": end[0], "c": end[1]}, want, RTOL[torch.float64])
        assert (out[~chunk.mask] == 0).all()
    g_out = torch.randn(K, B, H, dtype=torch.float64)
    g_state = tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(2))
    (gx, (gh, gc), gp), (wx, (wh, wc), wp) = (
        backend.backward_chunk(cell, p, {}, chunk, r, g_out, g_state) for backend, r in ((cpu, res), (ref, ref_res)))
    assert_close_all({"xp": gx, "h": gh, "c": gc, "w": gp["weight_hh"]},
                     {"xp": wx, "h": wh, "c": wc, "w": wp["weight_hh"]}, RTOL[torch.float64])


@pytest.mark.parametrize("breakage, message", [
    (lambda c, s: (Chunk(0, c.xp.int(), None), s), "got xp of dtype torch.int32"),
    (lambda c, s: (c, (s[0][:2], s[1])), r"state\[0\] must have shape \(3, 45\)"),
    (lambda c, s: (c, (s[0], s[1].float())), r"state\[1\] must have dtype torch.float64"),
    (lambda c, s: (Chunk(0, c.xp, torch.ones(4, B, dtype=torch.uint8)), s), "mask must have dtype torch.bool"),
])
def test_bad_arguments_are_named(breakage, message):
    cell, p, chunk, state = chunk_args()
    chunk, state = breakage(chunk, state)
    backend = get_backend("cpu", torch.device("cpu"))
    with pytest.raises((TypeError, ValueError), match=message):
        backend.forward_chunk(cell, p, {}, chunk, state, keep=True)


def forward_args(**change):
    """Valid arguments of ``_C.forward_chunk`` for one LSTM step at B = H = 1, with ``change``."""
    x, h = torch.zeros(1, 1, 4), torch.zeros(2, 1, 1)
    args = dict(cell="lstm", dtype=_C().DType.float32, threads=1, K=1, B=1, H=1, xp=x.data_ptr(),
                w_hh=x.data_ptr(), b_rec=0, mask=0, states=[h.data_ptr(), h.data_ptr()], act=x.data_ptr(),
                y=h.data_ptr(), rec=x.data_ptr(), keep=False)
    return {**args, **change}, (x, h)


def _C():
    from revrnn import _C
    return _C


@pytest.mark.parametrize("change, message", [
    (dict(w_hh=0), "argument 'w_hh' is a null pointer"),
    (dict(states=[0, 0]), "argument 'states' is a null pointer"),
    (dict(states=[8]), "the lstm cell has 2 state tensors, got 1"),
    (dict(cell="nru"), "argument 'cell' must be one of .*, got 'nru'"),
    (dict(cell="glstm"), "argument .unit. is a null pointer"),
    (dict(cell="ligru", states=[8]), "argument .aux. is a null pointer"),
    (dict(K=-1), "K must be >= 0, got -1"),
    (dict(threads=0), "threads must be >= 1, got 0"),
    (dict(B=2 ** 20, K=2 ** 12), "exceeds the BLAS's 32-bit sizes"),
])
def test_extension_rejects_bad_arguments(change, message):
    args, _keep = forward_args(**change)
    with pytest.raises(ValueError, match=message):
        _C().forward_chunk(**args)


@pytest.mark.parametrize("change, message", [
    (dict(M=3), "k\\*M a square, got K=1, M=3, k=2"),
    (dict(threads=0), "threads must be >= 1, got 0"),
    (dict(addresses=[0] * 12), "must list 13 addresses, got 12"),
    (dict(w_heads=0), "argument 'w_heads' is a null pointer"),
])
def test_nru_extension_rejects_bad_arguments(change, message):
    """The NRU's entry (revrnn/nru.h) refuses what would crash it, naming the argument."""
    x = torch.zeros(64)
    addresses = dict(xp=x, w_hh=x, w_heads=x, b_heads=0, mask=0, s=x, y=x, g=0, dxp=0, dheads=0, rec=x, heads=x,
                     work=x)
    args = dict(dtype=_C().DType.float32, threads=1, K=1, B=1, H=1, M=8, k=2, relu=False, clamp=None, eps=1e-12,
                keep=False)
    for key, value in change.items():
        (addresses if key in addresses else args)[key] = value
    listed = change.get("addresses") or [t if isinstance(t, int) else t.data_ptr() for t in addresses.values()]
    args.pop("addresses", None)
    with pytest.raises(ValueError, match=message):
        _C().nru_forward(**args, addresses=listed)


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        self.counts[name] = self.counts.get(name, 0) + 1
        return func(*args, **(kwargs or {}))


def test_the_time_loop_is_compiled():
    """A chunk costs the same torch ops (allocations, copies; no GEMM) whatever its length: the
    steps, their GEMMs included, run in C++ on buffers allocated once per chunk."""
    backend = get_backend("cpu", torch.device("cpu"))
    counts = []
    for K in (2, 9):
        cell, p, chunk, state = chunk_args(K=K)
        with CountOps() as fwd:
            _, _, res = backend.forward_chunk(cell, p, {}, chunk, state, keep=True)
        with CountOps() as bwd:
            backend.backward_chunk(cell, p, {}, chunk, res, torch.randn(K, B, H, dtype=torch.float64),
                                   tuple(torch.randn(B, H, dtype=torch.float64) for _ in range(2)))
        counts.append((fwd.counts, bwd.counts))
    assert counts[0] == counts[1]
    gemms = {"mm", "addmm", "addmm_", "matmul", "bmm"}
    assert not gemms & {*counts[0][0], *counts[0][1]}


def test_auto_runs_autocast_on_the_executor():
    """Under bfloat16 autocast the steps see bfloat16, which the executor runs in float32: ``auto``
    picks it, and its result is no further from float64 than twice the reference's under the
    same autocast (plus 16 ulps of bfloat16)."""
    cell = LSTMCell(I, H)
    torch.manual_seed(4)
    truth = revrnn.nn.LSTM(I, H, dtype=torch.float64, backend="reference")
    ours, ref = revrnn.nn.LSTM(I, H), revrnn.nn.LSTM(I, H, backend="reference")
    ours.load_state_dict(truth.state_dict())
    ref.load_state_dict(truth.state_dict())
    x = torch.randn(6, B, I)
    want = truth(x.double())[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert resolve("auto", cell, torch.device("cpu"), torch.float32).name == "cpu"
        got, base = ours(x)[0], ref(x)[0]
    assert got.dtype == torch.bfloat16  # the projection's, as on Triton (the reference's steps give float32)
    bound = 2 * rel_err(base.double(), want) + 16 * torch.finfo(torch.bfloat16).eps
    assert rel_err(got.double(), want) <= bound


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for _, c in cases(low_precision=True)])
def test_low_precision(case, dtype):
    """16-bit inputs run their chunks in float32 (revrnn/backends/executor.py), the path the CUDA
    backend takes too: every output, state and gradient, in the reference's dtypes, no further
    from float64 than twice the reference's own error in ``dtype`` (plus 16 ulps)."""
    torch.manual_seed(2)
    ref64 = case.make(5, 19, dtype=torch.float64, backend="reference")
    if not get_backend("cpu", torch.device("cpu")).supports(ref64.cells[0], dtype):
        pytest.fail(f"backend 'cpu' does not run {case.name} in {dtype}")
    assert_low_precision(ref64, torch.randn(11, 3, 5, dtype=torch.float64), dtype, 16, backend="cpu")


@pytest.mark.parametrize("module", MODULES)
def test_threads_split_the_work(module, two_threads, poison):
    """Big enough a step for a team of two threads (csrc/cpu/device.h: kParallelWork), each with
    a slice of the units, H = 100 so that the slices are uneven (64 and 36), or for the NRU of the
    rows (13 and 12): the same as the reference, packed rows included, so no slice misses a unit,
    a row or a barrier."""
    Hb, Bb = 100, 25  # B G H >= 2^18 for every cell here (G >= 2H; the NRU's (H + 2k + 4r)(H + M))
    ref = make(module, I, Hb, dtype=torch.float64, backend="reference", bidirectional=True)
    cpu = make(module, I, Hb, dtype=torch.float64, backend="cpu", bidirectional=True)
    cpu.load_state_dict(ref.state_dict())
    x = torch.randn(7, Bb, I, dtype=torch.float64)
    lengths = [7, 3, 6, 1, 7, 5, 2, 7, 4, 7, 6, 1, 2, 7, 3, 5, 7, 2, 7, 1, 6, 4, 7, 3, 5]
    cpu, ref = Packed(cpu, lengths), Packed(ref, lengths)
    want = grads(ref, x)
    assert_close_all(grads(cpu, x), want, rtol_for(module, ref, x, None, want))


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("KAF")])
def test_kaf_float32(module):
    """The KAF cells in float32 are no further from float64 than twice the float32 reference's
    own distance (plus 16 ulps), in every output, state and gradient, kaf_alpha's included."""
    torch.manual_seed(3)
    ref64 = make(module, I, H, dtype=torch.float64, backend="reference", num_layers=2)
    assert_low_precision(ref64, torch.randn(T, B, I, dtype=torch.float64), torch.float32, backend="cpu")


@pytest.mark.parametrize("module", [m for m in MODULES if m.startswith("NRU")])
def test_nru_float32(module):
    """The NRU in float32 over 8 steps (two layers) is no further from float64 than 4 times the
    float32 reference's own distance (plus 16 ulps), in every output, state and gradient. Two
    float32 computations that round differently are both random draws of that distance: with the
    ReLU and the clamp, whose decisions a rounding can flip, the executor's was up to 3.3 times the
    reference's in 30 seeds (without them at most 2)."""
    ref64 = make(module, I, H, dtype=torch.float64, backend="reference", num_layers=2)
    assert_low_precision(ref64, torch.randn(8, B, I, dtype=torch.float64), torch.float32, backend="cpu", factor=4)


# -- the g-LSTM's sparse path ---------------------------------------------------------------
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("name, index", [("x", 0), ("w_ih", 1), ("gate", 5), ("units", 7), ("act", 10),
                                         ("prev", 11), ("wi", 20), ("wh", 21), ("rec", 22), ("dw", 23), ("dk", 24)])
def test_glstm_sparse_extension_rejects_null_operands(backward, name, index):
    """With an open unit-step the sparse entry (revrnn/glstm_sparse.h) refuses a null operand it
    would read, naming it; with none open, those may be null."""
    x, units, offsets = torch.zeros(64), torch.zeros(1, dtype=torch.int64), torch.tensor([0, 1])
    addresses = [x.data_ptr()] * 25
    addresses[4] = 0  # mask
    addresses[6], addresses[7] = offsets.data_ptr(), units.data_ptr()
    if not backward:  # dh, dc, dx, dw_ih, dbias, dw_hh, dgate; dw, dk
        for i in (13, 14, 15, 16, 17, 18, 19, 23, 24):
            addresses[i] = 0
    run = _C().glstm_sparse_backward if backward else _C().glstm_sparse_forward
    bad = list(addresses)
    bad[index] = 0
    if backward or name not in ("dw", "dk"):
        with pytest.raises(ValueError, match=f"argument '{name}' is a null pointer"):
            run(_C().DType.float32, 1, 1, 1, 1, 1, bad)
    none = torch.tensor([0, 0])
    bad[6] = none.data_ptr()
    run(_C().DType.float32, 1, 1, 1, 1, 1, bad)  # nothing open: nothing read


@pytest.fixture
def cpu_backend(glstm_sparse):
    return glstm_sparse("cpu")


@pytest.mark.parametrize("memory", ["store", "recompute"])
@pytest.mark.parametrize("lengths", [None, [40, 17, 1]], ids=["full", "packed"])
def test_glstm_sparse_equals_dense_and_skips_work(cpu_backend, memory, lengths, poison):
    """Narrow gates (σ = 2.5% of t_max): most unit-steps are exactly closed. The sparse path
    gives the dense path's and the reference's results (packed rows too) and counts exactly the
    open unit-steps it computed."""
    torch.manual_seed(6)
    kw = dict(t_max=40.0, sigma_fraction=0.025, dtype=torch.float64)
    ref = revrnn.nn.GLSTM(I, H, backend="reference", **kw)
    cpu = revrnn.nn.GLSTM(I, H, backend="cpu", memory=memory, **kw)
    cpu.load_state_dict(ref.state_dict())
    if lengths:
        cpu, ref = Packed(cpu, lengths), Packed(ref, lengths)
    x = torch.randn(40, 3, I, dtype=torch.float64)
    assert_glstm_sparse_matches(cpu_backend, cpu, ref, x, cpu.rnn if lengths else cpu, memory == "recompute")


def test_glstm_sparse_fully_closed_steps(cpu_backend):
    """Steps where every unit is closed are skipped; the state passes through bit-exactly."""
    cpu_backend.glstm_sparse = "always"
    assert_glstm_closed_steps_pass_through(revrnn.nn.GLSTM(5, 4, t_max=8.0, dtype=torch.float64, backend="cpu"))


def test_glstm_sparse_gradcheck(cpu_backend):
    cpu_backend.glstm_sparse = "always"
    m = revrnn.nn.GLSTM(3, 4, t_max=6.0, sigma_fraction=0.2, dtype=torch.float64, backend="cpu")
    gradcheck_module(m, torch.randn(6, 2, 3, dtype=torch.float64))


class Sizes(TorchDispatchMode):
    """The element counts of every tensor the ops under it return."""

    def __init__(self):
        super().__init__()
        self.sizes: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.sizes.add(t.numel())
        return out


def test_glstm_sparse_projects_inside_its_loop(cpu_backend):
    """The sparse path takes the layer input: no tensor of the projection's size T·B·4H is made
    in forward or backward, where the dense path makes one."""
    torch.manual_seed(0)
    T_, B_, I_, H_ = 40, 3, 5, 7
    m = revrnn.nn.GLSTM(I_, H_, t_max=40.0, sigma_fraction=0.025, dtype=torch.float64, backend="cpu")
    x = torch.randn(T_, B_, I_, dtype=torch.float64, requires_grad=True)
    made = {}
    for mode in ("never", "always"):
        cpu_backend.glstm_sparse = mode
        with Sizes() as sizes:
            out, (h, c) = m(x)
            (out.sum() + h.sum() + c.sum()).backward()
        made[mode] = T_ * B_ * 4 * H_ in sizes.sizes
    assert made == {"never": True, "always": False}


@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_glstm_sparse_two_layers_bidirectional(cpu_backend, memory):
    """Every layer and direction of a packed two-layer bidirectional g-LSTM on the sparse path
    (each takes its own layer input; the reverse direction's steps count from each row's end):
    the reference's results."""
    torch.manual_seed(4)
    kw = dict(t_max=30.0, sigma_fraction=0.03, dtype=torch.float64, num_layers=2, bidirectional=True)
    ref = revrnn.nn.GLSTM(I, H, backend="reference", **kw)
    cpu = revrnn.nn.GLSTM(I, H, backend="cpu", memory=memory, **kw)
    cpu.load_state_dict(ref.state_dict())
    lengths = [30, 17, 9, 1]
    cpu, ref = Packed(cpu, lengths), Packed(ref, lengths)
    x = torch.randn(30, 4, I, dtype=torch.float64)
    cpu_backend.glstm_sparse = "always"
    cpu_backend.sparse_work.open = cpu_backend.sparse_work.total = 0
    assert_close_all(grads(cpu, x), grads(ref, x), 1e-12)
    passes = 2 if memory == "recompute" else 1
    assert cpu_backend.sparse_work.total == passes * 4 * 30 * H and cpu_backend.sparse_work.skipped_fraction > 0.5


def test_glstm_sparse_threads_split_the_work(cpu_backend, two_threads, poison):
    """Big enough a sparse step for a team of two (csrc/cpu/device.h: kParallelWork): forward
    each with a slice of the units, H = 100 so that the slices are uneven (64 and 36), backward
    each with half the rows. The reference's results, packed rows included, so no member misses
    an open unit, a row or a barrier."""
    torch.manual_seed(3)
    Tb, Bb, Ib, Hb = 30, 64, 37, 100
    kw = dict(t_max=30.0, sigma_fraction=0.03, dtype=torch.float64)
    ref = revrnn.nn.GLSTM(Ib, Hb, backend="reference", **kw)
    cpu = revrnn.nn.GLSTM(Ib, Hb, backend="cpu", **kw)
    cpu.load_state_dict(ref.state_dict())
    k = cpu.cells[0].time_gate(cpu.cell_params(0), torch.arange(Tb))
    assert 4 * int((k > 0).sum()) // Tb * Bb * (Hb + Ib) >= 2 ** 18  # the sparse loop's work per step
    lengths = [Tb - (i * 7) % Tb for i in range(Bb)]
    cpu, ref = Packed(cpu, lengths), Packed(ref, lengths)
    x = torch.randn(Tb, Bb, Ib, dtype=torch.float64)
    cpu_backend.glstm_sparse = "always"
    assert_close_all(grads(cpu, x), grads(ref, x), 1e-12)


@pytest.mark.parametrize("memory", ["store", "recompute", "slots"])
def test_glstm_sparse_runs_open_chunks_dense(cpu_backend, memory):
    """A sparse run whose chunk is more than half open runs that chunk dense, projecting it
    itself (its unit-steps are not counted as sparse work), with the reference's results."""
    torch.manual_seed(1)
    kw = dict(t_max=40.0, dtype=torch.float64)
    ref = revrnn.nn.GLSTM(I, H, backend="reference", **kw)
    with torch.no_grad():  # every unit open at steps 0 .. 11, closed after: 30 % of the unit-steps
        ref.mu_l0.fill_(4.5)
        ref.sigma_l0.fill_(2.0)
    chunks = dict(store={}, recompute=dict(checkpoint_every=10), slots=dict(checkpoint_slots=3))[memory]
    m = revrnn.nn.GLSTM(I, H, backend="cpu", memory="store" if memory == "store" else "recompute", **chunks, **kw)
    m.load_state_dict(ref.state_dict())
    x = torch.randn(40, 2, I, dtype=torch.float64)
    cpu_backend.glstm_sparse = "auto"
    cpu_backend.sparse_work.open = cpu_backend.sparse_work.total = 0
    assert_close_all(grads(m, x), grads(ref, x), 1e-12)
    work = cpu_backend.sparse_work
    if memory == "store":  # one chunk, 30 % open
        assert work.total == 40 * H and work.open == 12 * H
    elif memory == "recompute":  # chunk 0 ran dense (twice: forward and recompute), the 3 others sparse
        assert work.total == 2 * 30 * H and work.open == 2 * 2 * H
    else:  # pieces of at most 3 steps: those with an open step are mostly open, and run dense
        assert work.total > 0 and work.open == 0


@pytest.mark.parametrize("variant", ["no bias", "frozen", "constant input"])
def test_glstm_sparse_without_some_gradients(cpu_backend, variant):
    """The sparse path without biases, with weight_ih and bias_hh frozen (no gradient computed
    for them), or on an input that takes no gradient: the reference's results for the rest."""
    torch.manual_seed(2)
    kw = dict(t_max=40.0, sigma_fraction=0.025, dtype=torch.float64, bias=variant != "no bias")
    ref = revrnn.nn.GLSTM(I, H, backend="reference", **kw)
    m = revrnn.nn.GLSTM(I, H, backend="cpu", **kw)
    m.load_state_dict(ref.state_dict())
    x = torch.randn(40, 3, I, dtype=torch.float64, requires_grad=variant != "constant input")
    cpu_backend.glstm_sparse = "always"
    runs = []
    for module in (m, ref):
        if variant == "frozen":
            module.weight_ih_l0.requires_grad_(False)
            module.bias_hh_l0.requires_grad_(False)
        out, (h, c) = module(x)
        wrt = [t for t in (x, *module.parameters()) if t.requires_grad]
        runs.append([out, h, c, *torch.autograd.grad(out.sin().sum() + h.sum() + c.square().sum(), wrt)])
    assert len(runs[0]) == 3 + {"no bias": 5, "frozen": 5, "constant input": 6}[variant]
    for got, want in zip(*runs):
        assert rel_err(got, want) < 1e-12


def test_libru_probs_float32():
    """The LiBRU's probs form in float32 is no further from float64 than twice the float32
    reference's own distance (plus 16 ulps), in every output, state and gradient."""
    torch.manual_seed(3)
    ref64 = revrnn.nn.LiBRU(I, H, dtype=torch.float64, backend="reference", num_layers=2)
    assert_low_precision(ref64, torch.randn(T, B, I, dtype=torch.float64), torch.float32, backend="cpu")


ALLOCATIONS = r"""
import ctypes, sys, torch
from revrnn.backends import get_backend, Chunk
from revrnn.cells.gru import GRUCell
from revrnn.cells.nru import NRUCell
calls = ctypes.CDLL(None).revrnn_test_malloc_calls
backend = get_backend("cpu", torch.device("cpu"))
torch.set_num_threads(2)
B, H = 16, 128  # a team of two threads (csrc/cpu/device.h: kParallelWork)
if sys.argv[1] == "gru":
    cell, G = GRUCell(H, H), 3 * H
else:  # the NRU's own loop (revrnn/nru.h)
    cell, G = NRUCell(H, H, memory_size=16, num_heads=4), H
p = {s.name: (0.1 * torch.randn(s.shape)).requires_grad_() for s in cell.param_specs() if s.recurrent}
runner = backend.runner_for(cell)
counts = []
for K in (4, 4, 64, 64):  # the first call of a size starts the thread team, the BLAS, torch's caches
    chunk = Chunk(0, torch.randn(K, B, G), None)
    state = tuple(torch.randn(B, size) for size in cell.state_sizes)
    g, gs = torch.randn(K, B, H), tuple(torch.randn(B, size) for size in cell.state_sizes)
    before = calls()
    _, _, res = runner.forward(cell, p, {}, chunk, state, True)
    runner.backward(cell, p, {}, chunk, res, g, gs)
    counts.append(calls() - before)
print(counts)
"""


@pytest.mark.parametrize("cell", ["gru", "nru"])
def test_the_step_loop_allocates_nothing(tmp_path, cell):
    """malloc, counted by an interposed malloc, is called as often for a chunk of 64 steps as for
    one of 4: the torch side allocates per chunk, and the C++ loop (BLAS and thread team
    included) allocates nothing per step."""
    _, short, _, long = malloc_calls(tmp_path, ALLOCATIONS, cell)
    assert long == short, f"malloc calls: {short} for 4 steps, {long} for 64"


@pytest.mark.parametrize("n", [0, 1, 7, 255, 256, 257, 3 * 1001, 65535 * 256 - 1, 65535 * 256 + 1, 2 * 65535 * 256 + 7])
def test_cuda_launch_covers_every_element_once(n):
    """The CUDA pointwise launch's geometry (csrc/include/revrnn/launch.h), every thread of it run
    on the host through the kernels' own loop: each element visited exactly once, odd sizes and
    grids past the block cap (where the grid-stride loop takes over) included."""
    blocks, fewest, most = _C().launch_cover(n)
    assert (fewest, most) == ((1, 1) if n else (0, 0))
    assert 1 <= blocks <= 65535


@pytest.mark.parametrize("module", list(NO_PROJECTION_MODULES))
@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_store_keeps_no_projection(memory, module):
    """The executor's backward reads its residuals, not the projection (utils.py)."""
    assert_store_keeps_no_projection("cpu", module, memory)
