"""The compiled CPU executor's BLAS: the libraries it tries and in which order, both interfaces
it calls (CBLAS, Fortran) running the executor's chunks, the product a library must get right
before it is used, and the 32-bit size limit the glue enforces."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess

import pytest
import torch

import revrnn

if importlib.util.find_spec("revrnn._C") is None:
    pytest.skip("the extension is not built (test_build.py says why)", allow_module_level=True)

from revrnn.backends import cpu  # noqa: E402
from revrnn.backends.compiled import GEMM_SIZE, TARGETS  # noqa: E402


@pytest.fixture
def default_blas():
    """The library in use; loaded again after the test, which may swap it."""
    assert cpu.BLAS is not None, cpu._REASON
    yield cpu.BLAS
    assert cpu._C.load_blas(*cpu.BLAS) == ""


def lstm_matches_reference(seed: int = 0) -> None:
    """An LSTM step on the executor (a team of 2 where its work asks for one) against the
    reference, float64: output and every gradient."""
    torch.manual_seed(seed)
    x = torch.randn(6, 9, 40, dtype=torch.float64)
    runs = []
    for backend in ("cpu", "reference"):
        torch.manual_seed(seed + 1)
        m = revrnn.nn.LSTM(40, 150, backend=backend).double()
        xi = x.clone().requires_grad_()
        y, (h, c) = m(xi)
        (y.square().sum() + h.sum() + c.sum()).backward()
        runs.append([y, h, c, xi.grad, *(p.grad for p in m.parameters())])
    for got, want in zip(*runs):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_candidates_prefer_torchs_mkl_then_openblas(monkeypatch):
    monkeypatch.delenv("REVRNN_BLAS", raising=False)
    found = cpu._blas_candidates()
    if torch.backends.mkl.is_available():
        assert found[0] == (os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so"), "")
    assert found[-1][1] == "scipy_" and "openblas" in found[-1][0]
    monkeypatch.setenv("REVRNN_BLAS", "/somewhere/libblas.so")
    monkeypatch.setenv("REVRNN_BLAS_PREFIX", "my_")
    assert cpu._blas_candidates() == [("/somewhere/libblas.so", "my_")]


@pytest.mark.parametrize("which", ["torch-mkl", "openblas"])
def test_each_candidate_runs_the_executor(which, default_blas):
    """torch's MKL is called through the Fortran interface, OpenBLAS through CBLAS: both run a
    chunk as the reference does and the column-major mapping the CUDA device uses."""
    found = [c for c in cpu._blas_candidates() if ("openblas" in c[0]) == (which == "openblas")]
    if os.environ.get("REVRNN_BLAS") or not found:
        pytest.skip(f"{which} is not a candidate here (REVRNN_BLAS set, or torch has no MKL)")
    assert cpu._C.load_blas(*found[0]) == ""
    lstm_matches_reference()
    for ta in (False, True):
        for tb in (False, True):
            a = torch.randn(3, 5, dtype=torch.float64)
            b = torch.randn(5, 4, dtype=torch.float64)
            A, B = (a.T.contiguous() if ta else a), (b.T.contiguous() if tb else b)
            C = torch.full((3, 4), float("nan"), dtype=torch.float64)
            cpu._C.gemm_colmajor(cpu._C.DType.float64, ta, tb, 3, 4, 5, A.data_ptr(), A.stride(0), B.data_ptr(),
                                 B.stride(0), C.data_ptr(), 4)
            torch.testing.assert_close(C, a @ b, rtol=1e-14, atol=1e-14)


def test_a_library_without_gemm_is_refused_and_the_one_in_use_stays(default_blas):
    error = cpu._C.load_blas("libc.so.6", "")
    assert "has neither cblas_sgemm/cblas_dgemm nor sgemm_/dgemm_" in error
    lstm_matches_reference()


def test_a_library_with_wrong_products_is_refused_and_the_one_in_use_stays(tmp_path, default_blas):
    """A Fortran BLAS whose GEMMs write nothing fails the product check at load time."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build a stand-in library")
    src = tmp_path / "wrong.c"
    src.write_text("void sgemm_(void) {}\nvoid dgemm_(void) {}\n")
    lib = tmp_path / "libwrong.so"
    subprocess.run([cc, "-shared", "-fPIC", str(src), "-o", str(lib)], check=True)
    error = cpu._C.load_blas(str(lib), "")
    assert error == f"{lib}: its GEMM computed a wrong product (an interface other than the one resolved?)"
    lstm_matches_reference(seed=3)


def test_gemm_sizes_beyond_32_bits_are_refused():
    """The executors' BLAS and cuBLAS take 32-bit sizes: an operand of 2^31 rows is refused by
    name before any address is handed out (an expanded tensor: no memory behind it)."""
    tg = TARGETS["cpu"]
    big = torch.zeros(1, 1).expand(GEMM_SIZE + 1, 1)
    with pytest.raises(ValueError, match=r"xp of shape \(65536, 32768, 1\) is 2147483648 rows of 1, but the GEMMs "
                                         r"take sizes up to 2147483647; run shorter chunks"):
        tg.check("xp", big.view(2**16, 2**15, 1), (2**16, 2**15, 1), torch.float32, torch.device("cpu"),
                 contiguous=False)
    tg.check("xp", big[:GEMM_SIZE], (GEMM_SIZE, 1), torch.float32, torch.device("cpu"), contiguous=False)
