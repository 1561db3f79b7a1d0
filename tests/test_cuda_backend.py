"""The CUDA backend (``backend="cuda"``, module ``revrnn._C_cuda``).

Without a GPU (CI): the module builds wherever nvcc is found and runs the same cells with the
same buffer layouts as ``revrnn._C`` (both come from one registry, csrc/chunks.h), its bindings
check their arguments, the column-major GEMM it hands cuBLAS computes the row-major product the
loops ask for (run on the CPU's BLAS), and the backend says why it cannot run. The host loop it
runs is the CPU executor's (tested in test_cpu_backend.py and the conformance matrix), and so is
its glue, 16-bit inputs included (test_cpu_backend.py::test_low_precision).

With a GPU (``pytest -m gpu``): every conformance case and memory strategy against the float64
reference on the GPU, packed batches, 16-bit inputs against the reference's own rounding error,
reversible reconstruction, a side stream, and no host synchronisation inside a call.
"""
from __future__ import annotations

import importlib
import itertools
import os
import shutil

import pytest
import torch

import revrnn
from revrnn.backends import get_backend
from revrnn.cells import cases
from utils import assert_close_all, assert_low_precision, grads, packed_grads

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def cuda_module():
    """revrnn._C_cuda: built wherever nvcc is found at install (setup.py)."""
    try:
        return importlib.import_module("revrnn._C_cuda")
    except ImportError as err:
        if shutil.which("nvcc") or os.environ.get("REVRNN_REQUIRE_NVCC") == "1":
            pytest.fail(f"nvcc is here but revrnn._C_cuda was not built: {err}")
        pytest.skip(f"revrnn._C_cuda is not built (no nvcc): {err}")


def test_the_cuda_module_runs_the_cpu_modules_cells():
    from revrnn import _C
    C = cuda_module()
    assert C.cells() == _C.cells() and len(C.cells()) > 20
    for name in C.cells():
        layout = C.reversible_layout if name.startswith("rev") else C.cell_layout
        cpu = _C.reversible_layout if name.startswith("rev") else _C.cell_layout
        assert layout(name) == cpu(name), name
    assert C.version() == _C.version()


def test_the_cuda_bindings_check_their_arguments():
    C = cuda_module()
    x, h = torch.zeros(1, 1, 4), torch.zeros(2, 1, 1)
    args = dict(cell="lstm", dtype=C.DType.float32, where=[0, 0, 0, 0], K=1, B=1, H=1, xp=x.data_ptr(),
                w_hh=x.data_ptr(), b_rec=0, mask=0, states=[h.data_ptr(), h.data_ptr()], act=x.data_ptr(),
                y=h.data_ptr(), rec=x.data_ptr(), keep=False)
    with pytest.raises(ValueError, match="'cell' must be one of lstm, .*got 'nope'"):
        C.forward_chunk(**{**args, "cell": "nope"})
    with pytest.raises(ValueError, match="the lstm cell has 2 state tensors, got 1"):
        C.forward_chunk(**{**args, "states": [h.data_ptr()]})
    with pytest.raises(ValueError, match=r"'where' must list \[device, stream, workspace, workspace_bytes\]"):
        C.forward_chunk(**{**args, "where": [0]})
    assert "cannot load /nonexistent" in C.load_cublas("/nonexistent/libcublas.so")
    with pytest.raises(RuntimeError, match="cuBLAS is not loaded"):  # nothing runs without it
        C.forward_chunk(**args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ta, tb", list(itertools.product((False, True), repeat=2)))
def test_the_column_major_gemm_is_the_row_major_product(ta, tb, dtype):
    """revrnn/colmajor.h, the call the CUDA device makes, on the CPU's BLAS: odd sizes, leading
    dimensions beyond the columns used, the output's unused columns left alone."""
    from revrnn import _C
    M, N, K = 5, 7, 3
    torch.manual_seed(0)
    A = torch.randn(K + 2, M + 3, dtype=dtype) if ta else torch.randn(M, K + 4, dtype=dtype)
    B = torch.randn(N, K + 1, dtype=dtype) if tb else torch.randn(K, N + 2, dtype=dtype)
    a, b = (A[:K, :M].T if ta else A[:, :K]), (B[:, :K].T if tb else B[:, :N])
    C = torch.full((M, N + 5), float("nan"), dtype=dtype)
    flag = _C.DType.float32 if dtype == torch.float32 else _C.DType.float64
    _C.gemm_colmajor(flag, ta, tb, M, N, K, A.data_ptr(), A.stride(0), B.data_ptr(), B.stride(0), C.data_ptr(),
                     C.stride(0))
    torch.testing.assert_close(C[:, :N], a @ b)
    assert C[:, N:].isnan().all()


def test_without_a_gpu_the_backend_says_why():
    why = revrnn.available_backends("cpu")["cuda"]
    assert why is not None and ("CUDA" in why or "cuda" in why)
    with pytest.raises(revrnn.BackendUnavailable, match="backend 'cuda' is not available"):
        revrnn.nn.LSTM(3, 4, backend="cuda")(torch.randn(2, 1, 3))


# -- on a GPU -------------------------------------------------------------------------------
I, H, T, B = 5, 45, 7, 3
STRATEGIES = {"store": {}, "recompute": dict(memory="recompute", checkpoint_every=3),
              "revolve": dict(memory="recompute", checkpoint_slots=2), "reversible": dict(memory="reversible")}
#: as the CPU executor (test_conformance.py): libm's σ/tanh against torch's, over the steps
RTOL = {"store": 1e-10, "recompute": 1e-10, "revolve": 1e-10, "reversible": 1e-9}


def gpu_matrix() -> list:
    out = []
    for _, case in cases(conformance=True):
        modes = case.make(I, H, dtype=torch.float64).memory_modes
        for strategy in modes + (("revolve",) if "recompute" in modes else ()):
            out.append(pytest.param(case, strategy, id=f"{case.name}-{strategy}"))
    return out


def cuda_pair(case, strategy: str):
    ref = case.make(I, H, dtype=torch.float64, backend="reference").cuda()
    with torch.no_grad():
        for name, value in ref.named_parameters():
            if name.startswith("kaf_alpha"):  # per-unit rows, so that a wrong row shows
                value.add_(torch.randn_like(value), alpha=0.5)
    ours = case.make(I, H, dtype=torch.float64, backend="cuda", **STRATEGIES[strategy]).cuda()
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def cuda_backend():
    """The cuda backend on this GPU; where it cannot run, the test is skipped and
    test_gpu_backend_is_available fails with the reason (so that one reason does not fail every
    test and stop `pytest -m gpu --maxfail` before the other backends' tests)."""
    why = revrnn.available_backends("cuda")["cuda"]
    if why is not None:
        pytest.skip(f"backend 'cuda' is unavailable: {why}")
    return get_backend("cuda", torch.device("cuda"))


@pytest.mark.gpu
@needs_cuda
def test_gpu_backend_is_available():
    assert revrnn.available_backends("cuda")["cuda"] is None


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("case, strategy", gpu_matrix())
def test_gpu_conformance(case, strategy):
    cell = case.make(I, H, dtype=torch.float64).cells[0]
    backend = cuda_backend()
    if not backend.supports(cell, torch.float64):
        pytest.skip(f"the cuda backend has no runner for {case.name} (see README: GPU status)")
    torch.manual_seed(0)
    ref, ours = cuda_pair(case, strategy)
    x = torch.randn(T, B, I, dtype=torch.float64, device="cuda")
    assert_close_all(grads(ours, x), grads(ref, x), RTOL[strategy])
    lengths = torch.tensor([T, 2, 5])
    assert_close_all(packed_grads(ours, x, lengths, seed=1), packed_grads(ref, x, lengths, seed=1), RTOL[strategy])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for _, c in cases(low_precision=True)])
def test_gpu_low_precision(case, dtype):
    cell = case.make(5, 19, dtype=torch.float64).cells[0]
    if not cuda_backend().supports(cell, dtype):
        pytest.skip(f"the cuda backend has no runner for {case.name}")
    torch.manual_seed(2)
    ref64 = case.make(5, 19, dtype=torch.float64, backend="reference").cuda()
    assert_low_precision(ref64, torch.randn(11, 3, 5, dtype=torch.float64, device="cuda"), dtype, 16,
                         backend="cuda", factor=4)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("cls", ["RevGRU", "RevLSTM"])
def test_gpu_reversible_reconstruction_is_exact(cls):
    """verify=True raises unless the reverse pass returns every state and the buffer exactly."""
    cuda_backend()
    m = getattr(revrnn.nn, cls)(16, 64, num_layers=2, forget_bits=3, backend="cuda", verify=True).cuda()
    x = torch.randn(2000, 8, 16, device="cuda", requires_grad=True)
    out, _ = m(x)
    out.sum().backward()
    assert x.grad.isfinite().all()


@pytest.mark.gpu
@needs_cuda
def test_gpu_side_stream_and_no_host_synchronisation():
    """The loop runs on the caller's stream: on a side stream the result is the default stream's;
    and a forward and backward never wait for the GPU (torch's sync debug mode raises)."""
    cuda_backend()
    torch.manual_seed(0)
    m = revrnn.nn.LSTM(32, 128, backend="cuda").cuda()
    x = torch.randn(64, 16, 32, device="cuda", requires_grad=True)
    want = grads(m, x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = grads(m, x)
    torch.cuda.current_stream().wait_stream(side)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    torch.cuda.set_sync_debug_mode("error")
    try:
        out, _ = m(x)
        out.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_gpu_glstm_sparse_equals_dense(memory):
    """Narrow time gates: the sparse path (open units only, d k summed in row order) gives the
    dense path's and the reference's results, and counts the open unit-steps it computed."""
    backend = cuda_backend()
    torch.manual_seed(6)
    kw = dict(t_max=40.0, sigma_fraction=0.025, dtype=torch.float64)
    ref = revrnn.nn.GLSTM(5, 45, backend="reference", **kw).cuda()
    ours = revrnn.nn.GLSTM(5, 45, backend="cuda", memory=memory, **kw).cuda()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(40, 3, 5, dtype=torch.float64, device="cuda")
    saved = backend.glstm_sparse
    try:
        backend.glstm_sparse = "never"
        dense = grads(ours, x)
        backend.glstm_sparse = "always"
        backend.sparse_work.open = backend.sparse_work.total = 0
        sparse = grads(ours, x)
    finally:
        backend.glstm_sparse = saved
    assert_close_all(sparse, dense, 1e-12)
    assert_close_all(sparse, grads(ref, x), 1e-10)
    assert backend.sparse_work.skipped_fraction > 0.7


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("name", ["cuda", "triton"])
@pytest.mark.parametrize("module", ["LSTM", "GRU"])
def test_gpu_graphs(name, module):
    """With graphs on, chunks are captured once per shape and replayed: the results are the eager
    ones bit for bit, for new inputs and after a weight update, and no chunk was refused."""
    backend = cuda_backend() if name == "cuda" else get_backend("triton", torch.device("cuda"))
    torch.manual_seed(0)
    m = getattr(revrnn.nn, module)(16, 32, num_layers=2, backend=name, memory="recompute", checkpoint_every=8).cuda()
    xs = [torch.randn(32, 4, 16, device="cuda") for _ in range(2)]
    want = [grads(m, x) for x in xs]
    backend.graphs = True
    try:
        got = [grads(m, x) for x in xs]
    finally:
        backend.graphs = False
    for g, w in zip(got, want):
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in w)
    assert backend._graphs.graphs and not backend._graphs.refused
