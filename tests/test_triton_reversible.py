"""The Triton kernels of the reversible cells (:mod:`revrnn.kernels.reversible`).

* Integer core against the torch reference (:mod:`revrnn.cells.reversible.buffer`), bit for bit given
  the same quantised gates (states, words, stacks, heights; spec ``reversible.md`` §6 test 14),
  and the kernels' quantisation against :mod:`revrnn.cells.reversible.fixed`, bit for bit given the
  same float gates.
* The fused half-updates through RevGRU / RevLSTM with ``backend="triton"``: exact
  reconstruction, closeness to ``"reference"`` (Triton's σ and tanh differ from torch's at
  rounding level), and ``memory="store"`` against ``"reversible"`` on the same kernels.

On CPU the kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET), at several
milliseconds per launch: sequences are kept short, except for one long reconstruction per case."""
from __future__ import annotations

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

import revrnn  # noqa: E402
from revrnn import BackendUnavailable  # noqa: E402
from revrnn.backends import resolve  # noqa: E402
from revrnn.kernels import reversible as kernels  # noqa: E402
from revrnn.nn import RevGRU, RevLSTM  # noqa: E402
from revrnn.cells.reversible import fixed  # noqa: E402
from revrnn.cells.reversible.base import RevCellSpec  # noqa: E402
from revrnn.cells.reversible.buffer import TritonBuffer  # noqa: E402
from revrnn.cells.reversible.triton import fused_half  # noqa: E402
from revrnn.cells.reversible.revgru import RevGRUCell  # noqa: E402
from revrnn.cells.reversible.revlstm import RevLSTMCell  # noqa: E402

from reversible_checks import (CORE_CASES, buffers, check_core_flags_an_inexact_reverse,  # noqa: E402
                               check_core_step_by_step, compare_backends, inputs, random_states, run,
                               saturate_forget_gates, words_near_spill, assert_same_buffer)
from utils import assert_close_all  # noqa: E402
CELLS = [RevGRU, RevLSTM]
#: tanh of a large state: exp overflows to inf in the interpreter and tanh is -1, by design
LARGE_STATES = pytest.mark.filterwarnings("ignore:overflow encountered in exp")


# -- kernel level ---------------------------------------------------------------------------
@pytest.mark.parametrize("k, shape, masks, update", CORE_CASES)
def test_kernels_match_reference_step_by_step_and_reverse(k, shape, masks, update):
    check_core_step_by_step(TritonBuffer, k, shape, masks, update)


def test_kernels_flag_an_inexact_reverse():
    check_core_flags_an_inexact_reverse(TritonBuffer)


def test_kernel_outputs_are_fully_written_and_ops_are_opaque():
    """Poisoned outputs (conftest) are overwritten everywhere, including masked rows; the custom
    ops pass torch.library.opcheck (schema, declared mutations, fake tensors)."""
    gen = torch.Generator().manual_seed(1)
    shape = (3, 5)
    h = random_states(gen, shape)
    n = torch.randint(1, 1025, shape, generator=gen)
    u = torch.randint(-(2 ** 23), 2 ** 23, shape, generator=gen)
    active = torch.tensor([[True], [False], [True]])
    word = words_near_spill(gen, shape, 3)
    scratch, height = torch.zeros(2, *shape, dtype=torch.int64), torch.zeros(shape, dtype=torch.int64)
    h2, w2 = kernels.multiply(h, n, u, active, word, scratch, height, 7, 1 << 50)
    assert torch.equal(h2[1], h[1]) and torch.equal(w2[1], word[1])
    bad = torch.zeros((), dtype=torch.bool)
    h3, w3 = kernels.divide(h2, n, u, active, w2, scratch, height, bad, 7)
    assert torch.equal(h3, h) and torch.equal(w3, word) and not height.any() and not bad
    args = (h, n, u, active, word, scratch.clone(), height.clone(), 7, 1 << 50)
    torch.library.opcheck(torch.ops.revrnn.rev_multiply.default, args)
    torch.library.opcheck(torch.ops.revrnn.rev_divide.default, (h2, n, None, None, w2, scratch, height, bad, 7))


@triton.jit
def _quantise(z, u, n_out, q_out, numel, LOW: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    ok = offs < numel
    tl.store(n_out + offs, kernels._gate_int(tl.load(z + offs, mask=ok), LOW), mask=ok)
    tl.store(q_out + offs, kernels._update_int(tl.load(u + offs, mask=ok)), mask=ok)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kernel_quantisation_is_torchs(dtype):
    """The fused kernels quantise a float gate and update exactly as fixed.quantise_gate and
    quantise_update: round half to even at every tie, clamps, NaN and infinities."""
    gen = torch.Generator().manual_seed(2)
    n = 4096
    z = torch.rand(n, generator=gen, dtype=dtype)
    z[:1024] = (torch.arange(1024, dtype=dtype) + 0.5) / 1024                  # every tie of 1024 z
    z[1024:1030] = torch.tensor([float("nan"), 0.0, 1.0, 1.5, -1.0, 2.0 ** -11])
    u = torch.rand(n, generator=gen, dtype=dtype) * 2 - 1
    u[:2048] = (torch.randint(-(2 ** 23), 2 ** 23, (2048,), generator=gen).to(dtype) + 0.5) / 2 ** 23  # ties
    u[2048:2054] = torch.tensor([float("nan"), float("inf"), -float("inf"), 1.0, -1.0, 2.0])
    for k in (0, 1, 3, 10):
        gates, updates = torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=torch.int64)
        _quantise[(1,)](z, u, gates, updates, n, LOW=fixed.min_gate(k), BLOCK=n)
        assert torch.equal(gates, fixed.quantise_gate(z, k)), k
        assert torch.equal(updates, fixed.quantise_update(u))


def torch_gates(cell: RevCellSpec, pre: torch.Tensor):
    """The reference cell's gates of given pre-activations (a zero recurrent term adds exactly 0)."""
    hb = pre.new_zeros(pre.shape[0], cell.half)
    return cell.gates(pre, hb, pre.new_zeros(pre.shape[1], cell.half))


def fused_advance(cell: RevCellSpec, pre: torch.Tensor, own, buf: TritonBuffer, active):
    G, ops = cell.half, buf.claim(cell.multiplies)
    if isinstance(cell, RevGRUCell):
        return kernels.gru_advance(pre[:, :2 * G], pre[:, 2 * G:], own[0], active, *ops, cell.forget_bits)[:1]
    return kernels.lstm_advance(pre, *own, active, *ops, cell.forget_bits)[:2]


def fused_retreat(cell: RevCellSpec, pre: torch.Tensor, own, buf: TritonBuffer, active):
    G, ops, dh = cell.half, buf.unclaim(cell.multiplies), torch.zeros(own[0].shape, dtype=pre.dtype)
    if isinstance(cell, RevGRUCell):
        return kernels.gru_retreat(pre[:, :2 * G], pre[:, 2 * G:], own[0], dh, active, *ops, cell.forget_bits)[:1]
    return kernels.lstm_retreat(pre, *own, dh, dh, active, *ops, cell.forget_bits)[:2]


@LARGE_STATES
@pytest.mark.parametrize("k", [1, 10])
@pytest.mark.parametrize("spec", [RevGRUCell, RevLSTMCell])
def test_fused_half_updates_match_the_reference_integer_core(spec, k):
    """float64: each fused advance equals the reference cell's advance through the reference
    buffer given torch's gates of the same pre-activations (state, word, stack, height): Triton's
    σ and tanh differ from torch's by an ulp or so, and a quantised value flips only if the
    float is within that of a rounding boundary (odds ~1e-12 per value at float64). The fused
    retreat restores every step and the words."""
    gen = torch.Generator().manual_seed(k)
    B, G, steps = 3, 5, 12
    cell = spec(4, 2 * G, forget_bits=k)
    pre = torch.randn(steps, B, cell.blocks * G, generator=gen, dtype=torch.float64) * 2
    pre[..., :G] -= 3                                 # small forget gates: spills
    active = torch.rand(steps, B, 1, generator=gen) < 0.7
    words = words_near_spill(gen, (B, G), k)
    ref, tri = buffers(TritonBuffer, (B, G), k, steps * cell.multiplies, words)
    own_ref = own_tri = tuple(torch.randint(-(2 ** 40), 2 ** 40, (B, G), generator=gen)
                              for _ in cell.state_names)
    trail = [own_tri]
    for t in range(steps):
        own_ref = cell.advance(own_ref, torch_gates(cell, pre[t]), ref, active[t])
        own_tri = fused_advance(cell, pre[t], own_tri, tri, active[t])
        assert all(torch.equal(a, b) for a, b in zip(own_tri, own_ref)), f"step {t}"
        assert_same_buffer(ref, tri, f"step {t}")
        trail.append(own_tri)
    assert tri._height.sum() > 0                      # it spilled
    ref.end_chunk(), tri.end_chunk()
    assert tri.optimal_bits == pytest.approx(ref.optimal_bits, rel=1e-12)
    tri.begin_reverse_chunk(steps * cell.multiplies)
    for t in reversed(range(steps)):
        own_tri = fused_retreat(cell, pre[t], own_tri, tri, active[t])
        assert all(torch.equal(a, b) for a, b in zip(own_tri, trail[t])), f"reverse step {t}"
    tri.end_reverse_chunk()
    assert torch.equal(tri.word, words) and not tri._bad


@LARGE_STATES
def test_fused_ops_are_opaque():
    """The fused launchers pass torch.library.opcheck, with a buffer and without (k = 0)."""
    gen = torch.Generator().manual_seed(3)
    B, G, k = 3, 4, 3
    h, c = (torch.randint(-(2 ** 30), 2 ** 30, (B, G), generator=gen) for _ in range(2))
    pre3, pre5 = torch.randn(B, 3 * G, generator=gen), torch.randn(B, 5 * G, generator=gen)
    pre_zr, pre_g = pre3[:, :2 * G].contiguous(), pre3[:, 2 * G:].contiguous()
    hb, dh = torch.randn(B, G), torch.randn(B, G)
    active = torch.tensor([[True], [False], [True]])

    def buffer(ops: int, reverse: bool = False):
        words = torch.randint(0, 1 << 40, (B, G), generator=gen)
        stacks = (words, torch.zeros(2, B, G, dtype=torch.int64), torch.zeros(B, G, dtype=torch.int64))
        if reverse:
            return (*stacks, torch.zeros((), dtype=torch.bool))
        return (*stacks, torch.zeros(B, G, dtype=torch.float64), 10 - torch.arange(1025).double().log2())

    ops = torch.ops.revrnn
    da = torch.zeros(B, 3 * G)
    cases = [(ops.rev_gru_reset, (pre_zr, hb)),
             (ops.rev_gru_reset_backward, (pre_zr, hb, dh, da)),
             (ops.rev_gru_advance, (pre_zr, pre_g, h, active, *buffer(1), 0, 1 << 50, k)),
             (ops.rev_gru_advance, (pre_zr, pre_g, h, None, None, None, None, None, None, 0, 0, 0)),
             (ops.rev_gru_retreat, (pre_zr, pre_g, h, dh, active, *buffer(1, True), 0, k)),
             (ops.rev_gru_backward, (pre_zr, pre_g, c, dh, None, k)),
             (ops.rev_lstm_advance, (pre5, h, c, None, *buffer(2), 0, 1 << 50, k)),
             (ops.rev_lstm_retreat, (pre5, h, c, dh, dh, active, *buffer(2, True), 0, k)),
             (ops.rev_lstm_retreat, (pre5, h, c, dh, dh, None, None, None, None, None, 0, 0)),
             (ops.rev_lstm_backward, (pre5, h, c, c, dh, dh, active, k))]
    for op, args in cases:
        torch.library.opcheck(op.default, args)


# -- module level ---------------------------------------------------------------------------
FUSED = ("gru_reset", "gru_reset_backward", "gru_advance", "gru_retreat", "gru_backward",
         "lstm_advance", "lstm_retreat", "lstm_backward", "multiply", "divide")


@pytest.fixture
def launches(monkeypatch):
    """Counts kernel launches by launcher, to show what each path runs."""
    count = dict.fromkeys(FUSED, 0)
    for name in count:
        op = getattr(kernels, name)

        def counted(*args, _op=op, _name=name):
            count[_name] += 1
            return _op(*args)
        monkeypatch.setattr(kernels, name, counted)
    return count


def expected_launches(cls, layers: int, T: int, store: bool = False) -> dict[str, int]:
    """One fused kernel per half-update and pass (plus RevGRU's reset kernels); no per-multiply ones."""
    halves = 2 * layers * T
    back = "backward" if store else "retreat"
    if cls is RevGRU:
        want = {"gru_advance": halves, f"gru_{back}": halves, "gru_reset_backward": halves,
                "gru_reset": halves * (1 if store else 2)}
    else:
        want = {"lstm_advance": halves, f"lstm_{back}": halves}
    return {name: want.get(name, 0) for name in FUSED}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("forget_bits", [0, 1, 3, 10])
@pytest.mark.parametrize("cls", CELLS)
def test_fused_backend_is_close_to_reference(cls, forget_bits, dtype):
    compare_backends(cls, "triton", forget_bits, 2, dtype, lengths=[6, 3, 1])


@pytest.mark.parametrize("cls", CELLS)
def test_fused_launches_one_kernel_per_half_update(cls, launches):
    """An odd half size, one layer, full batch: exactly the fused kernels run (none of the
    per-multiply ones), one per half-update and pass."""
    compare_backends(cls, "triton", 10, 1, torch.float64, hidden=46, T=4)
    assert launches == expected_launches(cls, 1, 4)


@pytest.mark.parametrize("cls, forget_bits, dtype", [(RevGRU, 1, torch.float64), (RevGRU, 10, torch.float32),
                                                     (RevLSTM, 0, torch.float32), (RevLSTM, 3, torch.float64)])
def test_fused_reconstructs_long_sequences_exactly(cls, forget_bits, dtype):
    """Several chunks, packed variable lengths, two layers with locked dropout, spilling words:
    backward reconstructs the initial state bit for bit (verify=True raises otherwise) and
    empties the buffer. (Every module test here also runs with verify=True; this one is longer.)"""
    T, lengths = 30, [30, 13, 1]
    m = cls(4, 6, num_layers=2, dropout=0.3, forget_bits=forget_bits, chunk_size=5, dtype=dtype, verify=True,
            backend="triton")
    saturate_forget_gates(m)
    x, hx = inputs(cls, 2, 3, 6, T, dtype)
    result = run(m, x, hx, lengths)
    assert all(torch.isfinite(v).all() for v in result.values())
    if forget_bits >= 3:
        assert m.last_stats.used_bits > 64 * 3 * 3 + 8 * 3 * 3 * 5  # spilled words beyond words and counts


#: store vs reversible on the same kernels: only the order of the weight-gradient sums differs
SAME = {torch.float64: 1e-12, torch.float32: 1e-5}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("cls", CELLS)
def test_fused_store_matches_reversible(cls, dtype, launches):
    """memory="store" on the Triton path runs the same forward kernels (bit-identical outputs and
    states) and the same gradient kernels, from stored pre-activations instead of a reverse."""
    layers, T, lengths = 2, 5, [5, 2, 4]
    kw = dict(num_layers=layers, forget_bits=3, dtype=dtype, backend="triton")
    rev = cls(4, 8, memory="reversible", **kw)
    saturate_forget_gates(rev)
    store = cls(4, 8, memory="store", **kw)
    store.load_state_dict(rev.state_dict())
    x, hx = inputs(cls, layers, 3, 8, T, dtype)
    got = run(store, x, hx, lengths)
    assert launches == expected_launches(cls, layers, T, store=True)
    want = run(rev, x, hx, lengths)
    for key in ("output", *(f"state{k}" for k in range(len(hx)))):
        assert torch.equal(got[key], want[key]), key
    assert_close_all(got, want, SAME[dtype])
    assert store.last_stats == rev.last_stats


def test_verify_catches_a_perturbed_fused_reverse(monkeypatch):
    """Gates recomputed from other pre-activations break exactness on the fused path too (here
    without forgetting, where no buffer check exists); verify=True raises instead of returning
    wrong gradients."""
    m = RevGRU(4, 6, dtype=torch.float64, forget_bits=0, backend="triton", verify=True)
    retreat = kernels.gru_retreat

    def perturbed(pre_zr, *args):
        return retreat(pre_zr + 1e-3, *args)
    monkeypatch.setattr(kernels, "gru_retreat", perturbed)
    out, _ = m(torch.randn(3, 2, 4, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="reconstruction failed"):
        out.sum().backward()


def test_fused_path_names_cells_without_kernels():
    class Other(RevGRUCell):
        pass
    with pytest.raises(ValueError, match="no fused Triton kernels for the reversible cell Other"):
        fused_half(Other(4, 6))


# -- the integer format ---------------------------------------------------------------------
def test_kernels_format_equals_the_reference():
    """kernels/ never imports revrnn, so it writes the integer format down itself: it must be
    revrnn's, constant for constant and gate restriction for every k."""
    from revrnn.cells.reversible import buffer
    assert kernels.HIDDEN_BITS == fixed.HIDDEN_BITS
    assert (kernels.GATE_BITS.value, kernels.GATE_ONE.value, kernels.GATE_LOW.value) == (
        fixed.GATE_BITS, fixed.GATE_ONE, fixed.GATE_LOW)
    assert (kernels.WORD_BITS.value, kernels.WORD_MASK.value) == (buffer.WORD_BITS, buffer.WORD_MASK)
    like = torch.zeros(1)
    for k in range(11):
        gates = kernels._gates(k, like)
        assert (gates["M"], gates["LOW"]) == (fixed.max_forget(k), fixed.min_gate(k)), k


# -- backend choice -------------------------------------------------------------------------
def test_triton_without_interpreter_on_cpu_is_unavailable(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    m = RevGRU(3, 4, backend="triton")
    with pytest.raises(BackendUnavailable, match="backend 'triton' is not available on cpu.*TRITON_INTERPRET=1"):
        m(torch.randn(2, 1, 3))


def test_auto_uses_triton_on_cuda_only():
    """The reversible modules resolve their backend as every module does: on CPU the compiled
    executor where it is built, else the reference."""
    m = RevGRU(3, 4)
    on_cpu = "cpu" if revrnn.available_backends()["cpu"] is None else "reference"
    assert resolve(m.backend, m.cells[0], torch.device("cpu")).name == on_cpu
    assert resolve(m.backend, m.cells[0], torch.device("cuda")).name == "triton"  # only the device type is read


# -- GPU ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", CELLS)
def test_triton_matches_reference_on_cuda(cls):
    """A realistic size on the GPU, compiled kernels: the fused path reconstructs exactly
    (verify=True), stays close to the reference (float32, see :data:`CLOSE`), and store and
    reversible agree."""
    T, B, X, H = 200, 64, 128, 512
    kw = dict(num_layers=2, forget_bits=3, device="cuda", verify=True)
    ref = cls(X, H, backend="reference", **kw)
    tri = cls(X, H, backend="triton", **kw)
    store = cls(X, H, backend="triton", memory="store", **kw)
    tri.load_state_dict(ref.state_dict())
    store.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, X, device="cuda")
    hx = tuple(torch.zeros(2, B, H, device="cuda") for _ in ref.state_sizes)
    want, got, stored = run(ref, x, hx, None), run(tri, x, hx, None), run(store, x, hx, None)
    assert_close_all(got, want, CLOSE[torch.float32], FLOOR[torch.float32])
    assert torch.equal(stored["output"], got["output"])
    assert_close_all(stored, got, SAME[torch.float32])
