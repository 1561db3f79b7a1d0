"""Checks shared by the backends of the reversible cells (tests/test_triton_reversible.py,
tests/test_cpu_reversible.py): a compiled integer core against the torch reference buffer, bit
for bit given the same quantised gates (spec ``reversible.md`` §6 test 14), and a backend's
RevGRU / RevLSTM against ``backend="reference"`` on the same weights."""
from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from revrnn.cells.reversible import fixed
from revrnn.cells.reversible.buffer import InformationBuffer
from revrnn.nn import RevLSTM

from utils import as_tuple, assert_close_all, loss_of

I64_MIN, I64_MAX = -(2 ** 63), 2 ** 63 - 1


# -- the integer core -----------------------------------------------------------------------
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


def buffers(kind: type[InformationBuffer], shape: tuple[int, int], k: int, ops: int, words: torch.Tensor):
    """A reference buffer and one of ``kind``, both starting a chunk from the same words."""
    ref, other = InformationBuffer(shape, k), kind(shape, k)
    for buf in (ref, other):
        buf.begin_chunk(ops)
        buf.word = words.clone()
    return ref, other


def assert_same_buffer(ref: InformationBuffer, other: InformationBuffer, what: str) -> None:
    assert torch.equal(other.word, ref.word), f"{what}: word"
    assert torch.equal(other._height, ref._height), f"{what}: height"
    assert torch.equal(other._scratch, ref._scratch), f"{what}: scratch"


#: (k, shape, masks, update) of :func:`check_core_step_by_step`
CORE_CASES = [(10, (3, 5), True, True), (3, (4, 7), False, True), (1, (2, 3), True, False), (5, (1, 1), False, False)]


def check_core_step_by_step(kind: type[InformationBuffer], k: int, shape: tuple[int, int], masks: bool,
                            update: bool) -> None:
    """Each multiply of a ``kind`` buffer equals the reference buffer's (state, word, stack,
    height) exactly, from words at the spill threshold, with gates down to 2**-k; the reverse
    restores every step."""
    gen = torch.Generator().manual_seed(k)
    steps = 60
    z = 2.0 ** -k + (1 - 2.0 ** -k) * torch.rand(steps, *shape, generator=gen, dtype=torch.float64)
    z[::3] = 2.0 ** -k                                # the most forgetting: the fastest spills
    n = fixed.quantise_gate(z, k)
    u = fixed.quantise_update(torch.rand(steps, *shape, generator=gen, dtype=torch.float64) * 2 - 1)
    active = torch.rand(steps, shape[0], 1, generator=gen) < 0.7 if masks else [None] * steps
    words = words_near_spill(gen, shape, k)
    ref, other = buffers(kind, shape, k, steps, words)
    h_ref = h_other = h0 = random_states(gen, shape)
    trail = [h0]
    for t in range(steps):
        ut = u[t] if update else None
        h_ref = ref.multiply(h_ref, n[t], active[t], ut)
        h_other = other.multiply(h_other, n[t], active[t], ut)
        assert torch.equal(h_other, h_ref), f"step {t}: state"
        assert_same_buffer(ref, other, f"step {t}")
        trail.append(h_other)
    assert other._height.sum() > 0                    # it spilled
    assert other.optimal_bits == ref.optimal_bits
    for t in reversed(range(steps)):
        ut = u[t] if update else None
        h_ref = ref.divide(h_ref, n[t], active[t], ut)
        h_other = other.divide(h_other, n[t], active[t], ut)
        assert torch.equal(h_other, trail[t]) and torch.equal(h_ref, trail[t]), f"reverse step {t}"
        assert_same_buffer(ref, other, f"reverse step {t}")
    assert torch.equal(other.word, words) and not other._height.any() and not other._bad


def check_core_flags_an_inexact_reverse(kind: type[InformationBuffer]) -> None:
    """A wrong gate in reverse leaves a non-zero word where a spilled one is popped: a ``kind``
    buffer sets its error flag exactly as the reference does."""
    shape, k = (2, 4), 10
    words = torch.full(shape, 1 << (53 - k))         # every element spills at the first multiply
    ref, other = buffers(kind, shape, k, 3, words)
    h_ref = h_other = torch.arange(8, dtype=torch.int64).view(shape) * 12345
    n = torch.ones(shape, dtype=torch.int64)         # 10 bits into each word per multiply
    for _ in range(3):
        h_ref, h_other = ref.multiply(h_ref, n), other.multiply(h_other, n)
    for _ in range(3):
        h_ref, h_other = ref.divide(h_ref, n + 1), other.divide(h_other, n + 1)
    assert ref._bad and other._bad
    assert torch.equal(h_other, h_ref)
    assert_same_buffer(ref, other, "after the bad reverse")


# -- modules --------------------------------------------------------------------------------
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


def make_pair(cls, backend: str, forget_bits: int, layers: int, dtype: torch.dtype, hidden: int = 10, **kw):
    """The same weights (forget gates saturated) on backend="reference" and ``backend``."""
    kw = dict(num_layers=layers, forget_bits=forget_bits, chunk_size=4, dtype=dtype, verify=True, **kw)
    ref = cls(4, hidden, backend="reference", **kw)
    saturate_forget_gates(ref)
    other = cls(4, hidden, backend=backend, **kw)
    other.load_state_dict(ref.state_dict())
    return ref, other


def inputs(cls, layers: int, B: int, hidden: int, T: int, dtype: torch.dtype):
    """An input (T, B, 4) and initial states of a few units."""
    x = torch.randn(T, B, 4, dtype=dtype)
    return x, tuple(torch.randn(layers, B, hidden, dtype=dtype) * 4 for _ in range(2 if cls is RevLSTM else 1))


#: a backend vs reference, relative to each tensor's largest value. float64: σ and tanh differ
#: by an ulp or so, which moves a fixed-point update by an LSB (2**-23) at most and a quantised
#: gate essentially never, so what remains is float rounding. float32: update LSBs differ
#: often, and a gate within ~1e-4 of a rounding boundary can come out one quantum apart,
#: changing that state by 2**-10 of itself: one such flip is allowed, and it moves what depends
#: on that state by 2**-10 of the tensor's scale, so float32 is measured per tensor (FLOOR).
CLOSE = {torch.float64: 1e-9, torch.float32: 2.0 ** -10}
FLOOR = {torch.float64: None, torch.float32: 1.0}


def compare_backends(cls, backend: str, forget_bits: int, layers: int, dtype: torch.dtype, hidden: int = 10,
                     T: int = 6, lengths: list[int] | None = None, **kw) -> None:
    """``backend`` close to "reference" on the same weights and input (outputs, final states,
    gradients, buffer accounting); verify=True checks both reconstruct exactly."""
    ref, other = make_pair(cls, backend, forget_bits, layers, dtype, hidden, **kw)
    B = 3 if lengths is None else len(lengths)
    x, hx = inputs(cls, layers, B, hidden, T, dtype)
    want, got = run(ref, x, hx, lengths), run(other, x, hx, lengths)
    assert_close_all(got, want, CLOSE[dtype], FLOOR[dtype])
    if dtype == torch.float64:  # the same quantised trajectory: the same spills
        assert other.last_stats.used_bits == ref.last_stats.used_bits
    assert other.last_stats.optimal_bits == pytest.approx(ref.last_stats.optimal_bits, rel=CLOSE[dtype], abs=1e-9)
    multiplies = 2 * layers * T * (2 if cls is RevLSTM else 1) if forget_bits else 0
    if forget_bits * multiplies >= 2 * 53:  # words spilled: more than the current words and counts
        elements = B * hidden // 2
        assert other.last_stats.used_bits > 64 * elements + 8 * elements * -(-T // 4)
