"""The NRU on the triton backend against the reference backend: output, final state and every
gradient, for each memory strategy, head geometry, φ, memory clamp and bias, on CPU tensors
under the Triton interpreter (conftest poisons every kernel output with NaN before launch).

Tolerances. float64 runs the reference's equations in the same order up to summation order
(GEMMs, the sums over heads and slots) and ``exp(log(s)/5)`` for the fifth root, so 1e-12
relative. Lower precision is measured as in test_triton.py: against float64 on the same rounded
weights, no further than twice the reference's own error in that dtype plus ``ULPS``·eps.
The interpreter runs each per-row kernel program by program, so shapes are small.
"""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("triton")

import revrnn  # noqa: E402
from revrnn.cells import cases  # noqa: E402
from revrnn.cells.nru import l5_heads  # noqa: E402
from utils import assert_close_all, assert_low_precision, grads, packed_grads, rel_err  # noqa: E402

F64 = torch.float64
ULPS = 16
#: (id, NRU keywords): head geometries with r = sqrt(k·M) = 2, 4 and 6, φ on and off, the
#: clamp at values the memory reaches within the tests' few steps, no bias
CONFIGS = [
    ("m8k2", dict(memory_size=8, num_heads=2)),
    ("m9k4-relu", dict(memory_size=9, num_heads=4, use_relu=True)),
    ("m4k1-clamp", dict(memory_size=4, num_heads=1, memory_clamp=0.2)),
    ("m2k8-relu-clamp", dict(memory_size=2, num_heads=8, use_relu=True, memory_clamp=0.1)),
    ("m12k3-nobias", dict(memory_size=12, num_heads=3, bias=False)),
]
STRATEGIES = {"store": {}, "recompute": dict(memory="recompute", checkpoint_every=3),
              "revolve": dict(memory="recompute", checkpoint_slots=2)}
IDS = [c[0] for c in CONFIGS]


def pair(kw: dict, dtype=F64, input_size=5, hidden=7, **extra):
    """A reference NRU and a triton copy with the same weights."""
    ref = revrnn.nn.NRU(input_size, hidden, dtype=dtype, backend="reference", **kw, **extra)
    tri = revrnn.nn.NRU(input_size, hidden, dtype=dtype, backend="triton", **kw, **extra)
    tri.load_state_dict(ref.state_dict())
    return ref, tri


def assert_clamp_acts(kw: dict, memory: torch.Tensor) -> None:
    """With a clamp, some final memory slots sit on it and some inside it (both gradient cases)."""
    if kw.get("memory_clamp") is not None:
        on = memory.abs() == kw["memory_clamp"]
        assert on.any() and not on.all()


#: the geometries that tests/test_conformance.py runs under every strategy already (from the zero
#: state); here they run ``store`` only, for the given state and the clamp
IN_MATRIX = [dict(c.kwargs) for _, c in cases(conformance=True) if c.module == "NRU"]
MATCHES = [pytest.param(name, kw, strategy, id=f"{name}-{strategy}") for name, kw in CONFIGS for strategy in STRATEGIES
           if strategy == "store" or kw not in IN_MATRIX]


@pytest.mark.parametrize("name,kw,strategy", MATCHES)
def test_matches_reference(name, kw, strategy):
    """Two layers from a given state (its gradient compared too)."""
    torch.manual_seed(sum(map(ord, name + strategy)))
    ref, tri = pair(kw, num_layers=2, **STRATEGIES[strategy])
    x = torch.randn(6, 2, 5, dtype=F64)
    hx = (torch.rand(2, 2, 7, dtype=F64), 0.1 * torch.randn(2, 2, kw["memory_size"], dtype=F64))
    want = grads(ref, x, hx)
    assert_clamp_acts(kw, want["state1"])
    assert_close_all(grads(tri, x, hx), want, 1e-12)


@pytest.mark.parametrize("name,kw", [CONFIGS[1], CONFIGS[3]], ids=[IDS[1], IDS[3]])
def test_bidirectional_packed(name, kw):
    """Variable length: finished rows keep their state and output 0, in both directions."""
    torch.manual_seed(1)
    ref, tri = pair(kw, hidden=5, bidirectional=True)
    x = torch.randn(6, 4, 5, dtype=F64)
    lengths = torch.tensor([6, 2, 5, 1])
    assert_close_all(packed_grads(tri, x, lengths), packed_grads(ref, x, lengths), 1e-12)


@pytest.mark.parametrize("kw", [dict(memory_size=4, num_heads=1),
                                dict(memory_size=2, num_heads=2, use_relu=True, memory_clamp=0.5)],
                         ids=["m4k1", "m2k2-relu-clamp"])
def test_gradcheck(kw):
    """Fast mode (a random projection of the Jacobian): the full one takes minutes here."""
    torch.manual_seed(4)
    _, tri = pair(kw, input_size=1, hidden=2)
    names = [k for k, _ in tri.named_parameters()]

    def f(x, h, m, *params):
        out, (h, m) = torch.func.functional_call(tri, dict(zip(names, params)), (x, (h, m)))
        return out, h, m

    state = (torch.rand(1, 1, 2, dtype=F64), 0.2 * torch.randn(1, 1, kw["memory_size"], dtype=F64))
    inputs = [t.detach().clone().requires_grad_() for t in (torch.randn(3, 1, 1, dtype=F64), *state, *tri.parameters())]
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=True)


def test_floor_branch():
    """Tiny p and q on the write side: ``max(‖w‖_5, ε / (s_p s_q a))`` picks the floor there
    (the gradient then skips the norm), the norm on the erase side."""
    torch.manual_seed(5)
    ref, tri = pair(dict(memory_size=8, num_heads=2))
    k, r = 2, 4
    with torch.no_grad():
        for m in (ref, tri):
            for t in (m.weight_heads_l0, m.bias_heads_l0):
                t[2 * k:2 * k + 2 * r] *= 1e-7
    x = torch.randn(5, 3, 5, dtype=F64)
    # the first step from the zero state: the write vectors' L5 norm is below 1, so the floor won
    cell, p = ref.cells[0], ref.cell_params(0)
    h = torch.relu(cell.project(p, x, None, False)[0])
    heads = torch.cat((h, torch.zeros(3, 8, dtype=F64)), 1) @ p["weight_heads"].t() + p["bias_heads"]
    v_a = l5_heads(heads[:, 2 * k:2 * k + r], heads[:, 2 * k + r:2 * k + 2 * r], k, False)
    v_b = l5_heads(heads[:, 2 * k + 2 * r:2 * k + 3 * r], heads[:, 2 * k + 3 * r:], k, False)
    assert (torch.linalg.vector_norm(v_a, 5, -1) < 0.5).all()
    assert torch.allclose(torch.linalg.vector_norm(v_b, 5, -1), torch.ones((), dtype=F64))
    assert_close_all(grads(tri, x), grads(ref, x), 1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision(dtype):
    """The state (and so the output) is float32 for float16/bfloat16 input, as the reference's."""
    torch.manual_seed(2)
    ref64, _ = pair(dict(memory_size=9, num_heads=4, use_relu=True), hidden=11)
    assert_low_precision(ref64, torch.randn(8, 2, 5, dtype=F64), dtype, ULPS)


def test_long_sequence_huge_memory():
    """float32, head weights scaled so that the memory grows geometrically to ~1e21 within 40
    steps: p and q are then of that order, so ``p qᵀ`` itself overflows float32, as would
    ``‖p qᵀ‖_5`` from |p q| > 5e7 on. Everything the float32 reference computes is finite (the
    gradients reach ~1e24), and the kernels' results are too. Their distance from float64 is
    bounded by the reference's worst over all results: in such a run the rounding of the states
    reaches every output and gradient alike, so all errors are of one size, which varies between
    results and implementations by a few times."""
    torch.manual_seed(0)
    ref, tri = pair(dict(memory_size=4, num_heads=1), dtype=torch.float32, input_size=3, hidden=5)
    with torch.no_grad():
        for m in (ref, tri):
            m.weight_heads_l0.mul_(10.0)
    ref64 = copy.deepcopy(ref).double()
    x = torch.randn(40, 2, 3)
    truth, want, got = grads(ref64, x.double()), grads(ref, x), grads(tri, x)
    assert want["state1"].abs().max() > 1e20
    assert all(torch.isfinite(want[key]).all() for key in truth)
    bound = 2 * max(rel_err(want[key].double(), truth[key]) for key in truth) + ULPS * torch.finfo(torch.float32).eps
    for key in truth:
        assert torch.isfinite(got[key]).all(), key
        err = rel_err(got[key].double(), truth[key])
        assert err <= bound, f"{key}: triton {err:.3g} from float64, {bound:.3g} allowed"
