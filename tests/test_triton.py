"""The triton backend against the reference beyond the conformance matrix (tests/test_conformance.py,
every catalog case × strategy in float64): low precision, gradcheck, the g-LSTM's sparse path,
the persistent kernels, compile and errors; on CPU tensors under the Triton interpreter
(conftest sets TRITON_INTERPRET=1 and poisons every kernel output with NaN before launch).

Tolerances. float64 runs the same equations in the same order up to GEMM summation order, so
1e-12 relative. For float32, bfloat16 and float16 the yardstick is the reference's own error
in that dtype against float64 on the same rounded inputs and weights: the kernels accumulate
states in float32, so they must be no further from float64 than twice that error, plus a few
units of the dtype's rounding (``ULPS``·eps) for quantities the reference happens to hit exactly.
"""
from __future__ import annotations

import copy

import pytest
import torch

pytest.importorskip("triton")

import revrnn  # noqa: E402
from revrnn.backends import BackendUnavailable, get_backend, resolve  # noqa: E402
from revrnn.cells import cases  # noqa: E402
from utils import (NO_PROJECTION_MODULES, assert_close_all, assert_glstm_closed_steps_pass_through,  # noqa: E402
                   assert_glstm_sparse_matches, assert_low_precision, assert_store_keeps_no_projection,
                   gradcheck_module, grads, packed_grads)

ULPS = 16
#: the catalog's cases for the low-precision comparison and for gradcheck (with their small sizes)
LOW = [pytest.param(c, id=c.name) for _, c in cases(low_precision=True)]
GRADCHECK = [pytest.param(c, id=c.name) for _, c in cases(gradcheck=True)]


def pair(cls, kw, dtype=torch.float64, input_size=5, hidden=45, **extra):
    """A reference module and a triton copy with the same weights. KAF coefficients are
    perturbed per unit: the init gives every unit the same row, which would hide a wrong row."""
    ref = cls(input_size, hidden, dtype=dtype, backend="reference", **kw, **extra)
    with torch.no_grad():
        for name, value in ref.named_parameters():
            if name.startswith("kaf_alpha"):
                value.add_(torch.randn_like(value), alpha=0.5)
    tri = cls(input_size, hidden, dtype=dtype, backend="triton", **kw, **extra)
    tri.load_state_dict(ref.state_dict())
    return ref, tri


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", LOW)
def test_low_precision(case, dtype, request):
    name, cls, kw = case.name, case.module_class(), case.kwargs
    if name == "libru-probs" and dtype == torch.bfloat16:
        # Known: the log feedback's derivative 1/(h + 1e-11) makes these gradients meaningless
        # in bfloat16 (the reference itself is 2.6x off float64), and the kernels' float32
        # state lands on different tiny h than the bfloat16 reference: 1e15 off. Open issue.
        request.applymarker(pytest.mark.xfail(strict=True, reason="LiBRU probs bfloat16 gradients"))
    torch.manual_seed(2)
    ref64, _ = pair(cls, kw, hidden=19)
    assert_low_precision(ref64, torch.randn(11, 3, 5, dtype=torch.float64), dtype, ULPS)


@pytest.mark.parametrize("case", GRADCHECK)
def test_gradcheck(case):
    # tiny, and fast mode: the interpreter is slow, and a wrong gradient kernel moves a random
    # projection of the Jacobian as surely as its entries (the full Jacobian of the KAF cells
    # alone took 30 s); the reference's own gradients are checked entry by entry elsewhere
    cls, kw = case.module_class(), {**case.kwargs, **case.gradcheck}
    torch.manual_seed(4)
    _, tri = pair(cls, kw, input_size=1, hidden=2 + kw.get("proj_size", 0))
    x = torch.randn(3, 1, 1, dtype=torch.float64)
    if cls is revrnn.nn.LiBRU and kw.get("form", "probs") == "probs":
        # log feedback: keep the state away from the kink of max(h, 0) at 0
        gradcheck_module(tri, x, torch.rand(1, 1, 2, dtype=torch.float64) * 0.5 + 0.25, fast_mode=True)
    else:
        gradcheck_module(tri, x, fast_mode=True)


def test_kaf_alpha_grad_tiles():
    """The coefficients' gradient over several dictionary blocks and row slices (uneven: some
    slices are empty) equals the sum written out in torch; the LSTM layout skips g's columns."""
    from revrnn.kernels import kaf
    K, B, H, D = 7, 10, 5, 40
    pre, dkaf = torch.randn(K, B, 4 * H, dtype=torch.float64), torch.randn(K, B, 3 * H, dtype=torch.float64)
    d, gamma = torch.linspace(-3, 3, D, dtype=torch.float64), torch.tensor([0.7], dtype=torch.float64)
    s = torch.cat((pre[..., :2 * H], pre[..., 3 * H:]), -1)
    want = (dkaf[..., None] * torch.exp(-0.7 * (s[..., None] - d).square())).sum((0, 1))
    assert_close_all({"dalpha": kaf.alpha_grad(pre, dkaf, d, gamma, H, 2 * H)}, {"dalpha": want}, 1e-12)


def test_given_state_and_recompute_with_reprojection():
    torch.manual_seed(5)
    ref, tri = pair(revrnn.nn.LSTM, {}, hidden=13, num_layers=2, memory="recompute")
    x = torch.randn(10, 2, 5, dtype=torch.float64)
    hx = (torch.randn(2, 2, 13, dtype=torch.float64), torch.randn(2, 2, 13, dtype=torch.float64))
    assert_close_all(grads(tri, x, hx), grads(ref, x, hx), 1e-12)


# -- g-LSTM: the sparse open-unit path ------------------------------------------------------

@pytest.fixture
def triton_backend(glstm_sparse):
    return glstm_sparse("triton")


@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_glstm_sparse_equals_dense_and_skips_work(triton_backend, memory):
    """Narrow gates (σ = 2.5% of t_max): most unit-steps are exactly closed. The sparse path
    gives the dense path's results and counts exactly the open unit-steps it computed."""
    torch.manual_seed(6)
    kw = dict(t_max=40.0, sigma_fraction=0.025, memory=memory)
    ref, tri = pair(revrnn.nn.GLSTM, kw, hidden=17)
    x = torch.randn(40, 3, 5, dtype=torch.float64)
    assert_glstm_sparse_matches(triton_backend, tri, ref, x, tri, memory == "recompute")


@pytest.mark.parametrize("mode", ["always", "never"])
def test_glstm_store_keeps_no_projection(triton_backend, mode):
    """The sparse path's backward, like the dense one's, reads its residuals only."""
    triton_backend.glstm_sparse = mode
    assert_store_keeps_no_projection("triton", "GLSTM")


def test_glstm_sparse_fully_closed_steps(triton_backend):
    """Steps where every unit is closed are skipped; the state passes through bit-exactly."""
    torch.manual_seed(7)
    _, tri = pair(revrnn.nn.GLSTM, dict(t_max=8.0), hidden=4)
    triton_backend.glstm_sparse = "always"
    assert_glstm_closed_steps_pass_through(tri)


# -- selection and errors ------------------------------------------------------------------

@pytest.mark.parametrize("module", list(NO_PROJECTION_MODULES))
def test_store_keeps_no_projection(module):
    """Every runner's backward reads its residuals, not the projection (utils.py)."""
    assert_store_keeps_no_projection("triton", module)


def test_auto_never_picks_triton_on_cpu():
    for cell in (revrnn.nn.GRU(3, 4).cells[0], revrnn.nn.MGU(3, 4).cells[0]):
        assert resolve("auto", cell, torch.device("cpu")).name != "triton"


def test_cells_without_kernels_say_so():
    """Cells are matched by exact type: a subclass may change the step, so it is not run with
    its base class's kernels."""
    class Custom(revrnn.cells.LSTMCell):
        name = "custom_lstm"

    m = revrnn.nn.base.RecurrentBase(lambda i: Custom(i, 4), 3, 4, backend="triton")
    with pytest.raises(BackendUnavailable, match="backend 'triton' does not implement the custom_lstm cell"):
        m(torch.randn(2, 1, 3))


def test_nru_too_large_for_one_program_per_row():
    """A memory whose (heads, slots) tile passes Triton's largest tensor is left to other
    backends; one just below it is taken."""
    backend = get_backend("triton", torch.device("cpu"))
    assert not backend.supports(revrnn.cells.NRUCell(3, 4, memory_size=2 ** 20, num_heads=1), torch.float32)
    assert backend.supports(revrnn.cells.NRUCell(3, 4, memory_size=2 ** 16, num_heads=4), torch.float32)
    with pytest.raises(BackendUnavailable, match="memory_size=1048576 with num_heads=1"):
        resolve("triton", revrnn.cells.NRUCell(3, 4, memory_size=2 ** 20, num_heads=1), torch.device("cpu"))


def test_unsupported_dtype():
    m = revrnn.nn.GRU(3, 4, backend="triton").to(torch.complex64)
    with pytest.raises(BackendUnavailable, match="complex64"):
        m(torch.randn(2, 1, 3, dtype=torch.complex64))


# -- torch.compile ---------------------------------------------------------------------------

@pytest.mark.parametrize("cls,kw", [(revrnn.nn.LSTM, {}), (revrnn.nn.GRU, {}), (revrnn.nn.LSTM, dict(proj_size=3)),
                                    (revrnn.nn.KAFLSTM, {}), (revrnn.nn.NRU, {})],
                         ids=["lstm", "gru", "lstm-proj", "kaflstm", "nru"])
def test_compile_fullgraph(cls, kw):
    """Compiled with fullgraph, forward and backward (the module is one op, revrnn/stack_op.py),
    the result is the float64 reference's to float32 accuracy (against eager Triton alone, a bug
    in a kernel would pass)."""
    torch._dynamo.reset()
    torch.manual_seed(8)
    eager = cls(5, 6, backend="triton", **kw)
    ref64 = copy.deepcopy(eager).double()
    ref64.backend = "reference"
    compiled = copy.deepcopy(eager)
    compiled.compile(fullgraph=True)  # in place: parameter names stay those of the eager module
    x = torch.randn(4, 2, 5)
    got = grads(compiled, x)
    assert_close_all(got, grads(eager, x), 1e-6)
    truth = {k: v.float() for k, v in grads(ref64, x.double()).items()}
    assert_close_all(got, truth, 1e-4)


def test_compile_dynamic_shapes():
    """torch.compile(dynamic=True), or an automatic recompile at a new size, gives what eager
    gives (the module is one op under compile, revrnn/stack_op.py; when Dynamo traced the
    kernels' step loop, every output was NaN)."""
    torch._dynamo.reset()
    torch.manual_seed(8)
    eager = revrnn.nn.LSTM(5, 6, backend="triton")
    compiled = copy.deepcopy(eager)
    compiled.compile(fullgraph=True, dynamic=True)
    x = torch.randn(4, 2, 5)
    assert_close_all(grads(compiled, x), grads(eager, x), 1e-6)


# -- GPU ---------------------------------------------------------------------------------------

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", [c for c in LOW if not c.id.startswith("libru")])
def test_gpu_realistic(case, dtype):
    """B=32, H=256, T=200 on CUDA, against float64 on the same GPU."""
    cls, kw = case.values[0].module_class(), case.values[0].kwargs
    torch.manual_seed(9)
    ref64 = cls(64, 256, dtype=torch.float64, backend="reference", **kw).cuda()
    assert_low_precision(ref64, torch.randn(200, 32, 64, dtype=torch.float64, device="cuda"), dtype, ULPS)


@pytest.mark.gpu
@needs_cuda
def test_gpu_compile():
    torch.manual_seed(10)
    eager = revrnn.nn.GRU(32, 128, backend="triton").cuda()
    compiled = copy.deepcopy(eager)
    compiled.compile(fullgraph=True)
    x = torch.randn(16, 8, 32, device="cuda")
    assert_close_all(grads(compiled, x), grads(eager, x), 1e-5)


# -- the persistent whole-chunk kernels through the engine -------------------------------------

STRATEGIES = {"store": {}, "recompute": dict(memory="recompute", checkpoint_every=3),
              "revolve": dict(memory="recompute", checkpoint_slots=2)}


@pytest.fixture
def persistent_on():
    backend = get_backend("triton", torch.device("cpu"))
    before = backend.persistent
    backend.persistent = "always"
    yield backend
    backend.persistent = before


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("cls,kw", [(revrnn.nn.LSTM, {}), (revrnn.nn.GRU, {}), (revrnn.nn.GRU, dict(bias=False))],
                         ids=["lstm", "gru", "gru-nobias"])
def test_persistent_matches_reference(persistent_on, cls, kw, strategy):
    """float32 (the persistent kernels take no float64): 1e-5, the float32 tolerance of the
    step kernels against torch.nn (test_torch_compat)."""
    torch.manual_seed(11)
    ref, tri = pair(cls, kw, dtype=torch.float32, hidden=21, num_layers=2, bidirectional=True,
                    **STRATEGIES[strategy])
    x = torch.randn(9, 19, 5)
    lengths = torch.randint(1, 10, (19,))
    lengths[0] = 9
    assert_close_all(packed_grads(tri, x, lengths), packed_grads(ref, x, lengths), 1e-5)
