"""The compiled CPU backend: the C++ executor runs a whole chunk per call, per step one BLAS
GEMM and one fused, vectorised pointwise pass (``csrc/``, module ``revrnn._C``).

The C++ core is framework-free: it takes raw addresses, sizes and a dtype flag, and loads its
BLAS at run time (by default the MKL inside torch's CPU build, else the OpenBLAS of the
``scipy-openblas32`` package; ``REVRNN_BLAS`` names another library and ``REVRNN_BLAS_PREFIX``
its symbols' prefix). Everything torch is in the glue the CPU and CUDA backends share
(:mod:`.executor`, :mod:`.compiled`, the families' ``executor.py``).
"""
from __future__ import annotations

import importlib
import os

import torch

from .compiled import TARGETS, CompiledBackend, Target


def _torch_blas() -> str | None:
    """The library holding the MKL torch's CPU build links in (its Fortran BLAS symbols), or None
    where torch has no MKL."""
    if not torch.backends.mkl.is_available():
        return None
    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    return path if os.path.exists(path) else None


def _blas_candidates() -> list[tuple[str, str]]:
    """(path, symbol prefix) of the libraries to try, in order: ``REVRNN_BLAS`` alone where it is
    set, else torch's MKL (so the executor's GEMMs run on the library torch's own do), then the
    OpenBLAS of scipy-openblas32."""
    path, prefix = os.environ.get("REVRNN_BLAS"), os.environ.get("REVRNN_BLAS_PREFIX", "")
    if path:
        return [(path, prefix)]
    found = [(p, "") for p in [_torch_blas()] if p]
    try:
        import scipy_openblas32 as openblas
        found.append((os.path.join(openblas.get_lib_dir(), openblas.get_library(True)), "scipy_"))
    except ImportError:
        pass
    return found


def _load() -> tuple[object | None, str | None, tuple[str, str] | None]:
    """The extension with its BLAS loaded and that BLAS's (path, prefix), or None and why not."""
    try:
        C = importlib.import_module("revrnn._C")
    except ImportError as err:  # not built (no compiler, REVRNN_NO_EXT=1) or not loadable
        return None, (f"the compiled extension revrnn._C is not built: {err} "
                      "(see docs/build.md; `pip install -v .` shows why the build was skipped)"), None
    candidates = _blas_candidates()
    if not candidates:
        return None, ("it has no BLAS: install scipy-openblas32 (a dependency of revrnn), "
                      "or name a BLAS library in REVRNN_BLAS"), None
    errors = []
    for path, prefix in candidates:
        error = C.load_blas(path, prefix)
        if not error:
            return C, None, (path, prefix)
        errors.append(error)
    return None, "its BLAS did not load: " + "; ".join(errors), None


_C, _REASON, BLAS = _load()  # BLAS: the library in use, (path, symbol prefix)
#: the CPU's chunk calls run on a team of torch.get_num_threads() threads
TARGET = TARGETS["cpu"] = Target("cpu", "cpu", _C, _REASON, lambda device: torch.get_num_threads())


class CpuBackend(CompiledBackend):
    """The compiled executor on CPU tensors for the cells whose family has executor glue;
    float32 and float64, and 16-bit inputs run in float32."""

    name = "cpu"
    device_type = "cpu"
