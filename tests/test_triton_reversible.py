"""The Triton kernels of the reversible integer core (:mod:`revrnn.kernels.reversible`) against
the torch reference (:mod:`revrnn.reversible.buffer`): bit for bit at the kernel level (states,
words, stacks, heights), and through RevGRU / RevLSTM with ``backend="triton"`` vs
``"reference"`` (outputs, final states, gradients, buffer accounting). Spec ``reversible.md``
§6 test 14. On CPU the kernels run in Triton's interpreter (conftest sets TRITON_INTERPRET)."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

pytest.importorskip("triton")

from revrnn import BackendUnavailable  # noqa: E402
from revrnn.kernels import reversible as kernels  # noqa: E402
from revrnn.nn import RevGRU, RevLSTM  # noqa: E402
from revrnn.reversible import fixed  # noqa: E402
from revrnn.reversible.buffer import InformationBuffer, TritonBuffer  # noqa: E402

from utils import as_tuple, loss_of  # noqa: E402

I64_MIN, I64_MAX = -(2 ** 63), 2 ** 63 - 1
CELLS = [RevGRU, RevLSTM]


# -- kernel level ---------------------------------------------------------------------------
def random_states(gen: torch.Generator, shape: tuple[int, int]) -> torch.Tensor:
    """int64 states: mostly within the reachable range, some negative extremes and the int64
    limits (the arithmetic wraps identically there)."""
    h = torch.randint(-(2 ** 40), 2 ** 40, shape, generator=gen)
    flat = h.view(-1)
    specials = torch.tensor([I64_MIN, I64_MAX, -1, 0, 1, -(2 ** 62), 2 ** 62, -1024, -1025, 1023])
    flat[:specials.numel()] = specials[:flat.numel()]
    return h


def words_near_spill(gen: torch.Generator, shape: tuple[int, int], k: int) -> torch.Tensor:
    """Current words just below, at and above the spill threshold 2**(53 - k), and up to 2**53."""
    spill_at = 1 << (53 - k)
    near = spill_at + torch.randint(-2, 3, shape, generator=gen)
    anywhere = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2.0 ** 53).long().clamp(max=2 ** 53 - 1)
    return torch.where(torch.rand(shape, generator=gen) < 0.5, near, anywhere)


def buffers(shape: tuple[int, int], k: int, ops: int, words: torch.Tensor):
    ref, tri = InformationBuffer(shape, k), TritonBuffer(shape, k)
    for buf in (ref, tri):
        buf.begin_chunk(ops)
        buf.word = words.clone()
    return ref, tri


def assert_same_buffer(ref: InformationBuffer, tri: InformationBuffer, what: str) -> None:
    assert torch.equal(tri.word, ref.word), f"{what}: word"
    assert torch.equal(tri._height, ref._height), f"{what}: height"
    assert torch.equal(tri._scratch, ref._scratch), f"{what}: scratch"


@pytest.mark.parametrize("k, shape, masks, update", [(10, (3, 5), True, True), (3, (4, 7), False, True),
                                                     (1, (2, 3), True, False), (5, (1, 1), False, False)])
def test_kernels_match_reference_step_by_step_and_reverse(k, shape, masks, update):
    """Each multiply equals the reference buffer's (state, word, stack, height) exactly, from
    words at the spill threshold, with gates down to 2**-k; the reverse restores every step."""
    gen = torch.Generator().manual_seed(k)
    steps = 60
    z = 2.0 ** -k + (1 - 2.0 ** -k) * torch.rand(steps, *shape, generator=gen, dtype=torch.float64)
    z[::3] = 2.0 ** -k                                # the most forgetting: the fastest spills
    n = fixed.quantise_gate(z, k)
    u = fixed.quantise_update(torch.rand(steps, *shape, generator=gen, dtype=torch.float64) * 2 - 1)
    active = torch.rand(steps, shape[0], 1, generator=gen) < 0.7 if masks else [None] * steps
    words = words_near_spill(gen, shape, k)
    ref, tri = buffers(shape, k, steps, words)
    h_ref = h_tri = h0 = random_states(gen, shape)
    trail = [h0]
    for t in range(steps):
        ut = u[t] if update else None
        h_ref = ref.multiply(h_ref, n[t], active[t], ut)
        h_tri = tri.multiply(h_tri, n[t], active[t], ut)
        assert torch.equal(h_tri, h_ref), f"step {t}: state"
        assert_same_buffer(ref, tri, f"step {t}")
        trail.append(h_tri)
    assert tri._height.sum() > 0                      # it spilled
    assert tri.optimal_bits == ref.optimal_bits
    for t in reversed(range(steps)):
        ut = u[t] if update else None
        h_ref = ref.divide(h_ref, n[t], active[t], ut)
        h_tri = tri.divide(h_tri, n[t], active[t], ut)
        assert torch.equal(h_tri, trail[t]) and torch.equal(h_ref, trail[t]), f"reverse step {t}"
        assert_same_buffer(ref, tri, f"reverse step {t}")
    assert torch.equal(tri.word, words) and not tri._height.any() and not tri._bad


def test_kernels_flag_an_inexact_reverse():
    """A wrong gate in reverse leaves a non-zero word where a spilled one is popped: the
    kernel sets the buffer's error flag exactly as the reference does."""
    shape, k = (2, 4), 10
    words = torch.full(shape, 1 << (53 - k))         # every element spills at the first multiply
    ref, tri = buffers(shape, k, 3, words)
    h_ref = h_tri = torch.arange(8, dtype=torch.int64).view(shape) * 12345
    n = torch.ones(shape, dtype=torch.int64)         # 10 bits into each word per multiply
    for _ in range(3):
        h_ref, h_tri = ref.multiply(h_ref, n), tri.multiply(h_tri, n)
    for _ in range(3):
        h_ref, h_tri = ref.divide(h_ref, n + 1), tri.divide(h_tri, n + 1)
    assert ref._bad and tri._bad
    assert torch.equal(h_tri, h_ref)
    assert_same_buffer(ref, tri, "after the bad reverse")


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


# -- module level ---------------------------------------------------------------------------
def saturate_forget_gates(m: torch.nn.Module) -> None:
    """Forget gates near 2**-k, so that words fill and spill within a few steps."""
    G, blocks = m.hidden_size // 2, (0, 4) if isinstance(m, RevLSTM) else (0,)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.startswith("bias"):
                for b in blocks:
                    p[b * G:(b + 1) * G] -= 4.0


def run(m: torch.nn.Module, x: torch.Tensor, hx, lengths: list[int] | None) -> dict[str, torch.Tensor]:
    """Outputs, final states and every gradient of :func:`utils.loss_of`."""
    x = x.detach().requires_grad_()
    hx = tuple(h.detach().requires_grad_() for h in as_tuple(hx))
    inp = x if lengths is None else pack_padded_sequence(x, torch.tensor(lengths), enforce_sorted=False)
    out, state = m(inp, hx[0] if len(hx) == 1 else hx)
    if lengths is not None:
        out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    named = dict(m.named_parameters())
    g = torch.autograd.grad(loss_of(out, state), [x, *hx, *named.values()], allow_unused=True,
                            materialize_grads=True)
    result = {"output": out.detach(), **{f"state{k}": s.detach() for k, s in enumerate(as_tuple(state))}}
    result.update(zip(["x.grad", *(f"hx{k}.grad" for k in range(len(hx))), *named], g))
    return result


@pytest.fixture
def launches(monkeypatch):
    """Counts kernel launches, to show that backend="triton" really runs them."""
    count = {"multiply": 0, "divide": 0}
    for name in count:
        op = getattr(kernels, name)

        def counted(*args, _op=op, _name=name):
            count[_name] += 1
            return _op(*args)
        monkeypatch.setattr(kernels, name, counted)
    return count


def compare_backends(cls, launches, forget_bits: int, layers: int, dtype: torch.dtype, hidden: int = 10,
                     T: int = 9, lengths: list[int] | None = None) -> None:
    """backend="triton" and "reference" on the same weights and input: bit-identical outputs,
    final states, gradients and buffer accounting; verify=True reconstructs exactly."""
    kw = dict(num_layers=layers, forget_bits=forget_bits, chunk_size=4, dtype=dtype, verify=True)
    ref = cls(4, hidden, backend="reference", **kw)
    saturate_forget_gates(ref)
    tri = cls(4, hidden, backend="triton", **kw)
    tri.load_state_dict(ref.state_dict())
    B = 3 if lengths is None else len(lengths)
    x = torch.randn(T, B, 4, dtype=dtype)
    hx = tuple(torch.randn(layers, B, hidden, dtype=dtype) * 4 for _ in ref.state_sizes)
    want = run(ref, x, hx, lengths)
    got = run(tri, x, hx, lengths)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert tri.last_stats == ref.last_stats
    multiplies = 2 * layers * T * (2 if cls is RevLSTM else 1) if forget_bits else 0
    if lengths is None:
        assert launches == {"multiply": multiplies, "divide": multiplies}
    if forget_bits * multiplies >= 2 * 53:  # words spilled: more than the current words and counts
        elements = B * hidden // 2
        assert tri.last_stats.used_bits > 64 * elements + 8 * elements * -(-T // 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("forget_bits", [0, 1, 3, 10])
@pytest.mark.parametrize("cls", CELLS)
def test_triton_backend_is_bit_identical(cls, forget_bits, layers, dtype, launches):
    compare_backends(cls, launches, forget_bits, layers, dtype)


@pytest.mark.parametrize("forget_bits", [1, 3])
@pytest.mark.parametrize("cls", CELLS)
def test_triton_backend_variable_length(cls, forget_bits, launches):
    compare_backends(cls, launches, forget_bits, 2, torch.float64, lengths=[9, 4, 1])
    assert launches["multiply"] == launches["divide"] > 0


@pytest.mark.parametrize("cls", CELLS)
def test_triton_backend_odd_half_size(cls, launches):
    compare_backends(cls, launches, 10, 1, torch.float32, hidden=46, T=6)


def test_triton_backend_store_memory(launches):
    """memory="store" runs the same forward through the kernels."""
    ref = RevLSTM(4, 10, forget_bits=10, memory="store", backend="reference", dtype=torch.float64)
    tri = RevLSTM(4, 10, forget_bits=10, memory="store", backend="triton", dtype=torch.float64)
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    hx = (torch.zeros(1, 3, 10, dtype=torch.float64),) * 2
    got, want = run(tri, x, hx, None), run(ref, x, hx, None)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert launches == {"multiply": 20, "divide": 0}


# -- backend choice -------------------------------------------------------------------------
def test_triton_without_interpreter_on_cpu_is_unavailable(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    m = RevGRU(3, 4, backend="triton")
    with pytest.raises(BackendUnavailable, match="backend 'triton' is not available on cpu.*TRITON_INTERPRET=1"):
        m(torch.randn(2, 1, 3))


def test_auto_uses_triton_on_cuda_only():
    m = RevGRU(3, 4)
    assert not m._use_triton(torch.device("cpu"))
    assert m._use_triton(torch.device("cuda"))  # the device is not touched, only its type


# -- GPU ------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("cls", CELLS)
def test_triton_matches_reference_on_cuda(cls):
    """A realistic size on the GPU: the integer kernels reproduce the reference bit for bit."""
    T, B, X, H = 200, 64, 128, 512
    ref = cls(X, H, num_layers=2, forget_bits=3, backend="reference", device="cuda")
    tri = cls(X, H, num_layers=2, forget_bits=3, backend="triton", device="cuda")
    tri.load_state_dict(ref.state_dict())
    x = torch.randn(T, B, X, device="cuda")
    hx = tuple(torch.zeros(2, B, H, device="cuda") for _ in ref.state_sizes)
    want, got = run(ref, x, hx, None), run(tri, x, hx, None)
    for key in want:
        assert torch.equal(got[key], want[key]), key
    assert tri.last_stats == ref.last_stats
