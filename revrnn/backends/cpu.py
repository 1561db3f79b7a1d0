"""The compiled CPU backend: the C++ executor runs a whole chunk per call, per step one BLAS
GEMM and one fused, vectorised pointwise pass (``csrc/``, module ``revrnn._C``).

The C++ core is framework-free: it takes raw addresses, sizes and a dtype flag, and loads its
BLAS at run time (by default the OpenBLAS of the ``scipy-openblas32`` package; ``REVRNN_BLAS``
names another library and ``REVRNN_BLAS_PREFIX`` its symbols' prefix). Everything torch is in
the glue the CPU and CUDA backends share (:mod:`.executor`, :mod:`.compiled`, the families'
``executor.py``).
"""
from __future__ import annotations

import importlib
import os

import torch

from .compiled import TARGETS, CompiledBackend, Target


def _load() -> tuple[object | None, str | None]:
    """The extension with its BLAS loaded, or None and why not."""
    try:
        C = importlib.import_module("revrnn._C")
    except ImportError as err:  # not built (no compiler, REVRNN_NO_EXT=1) or not loadable
        return None, (f"the compiled extension revrnn._C is not built: {err} "
                      "(see docs/build.md; `pip install -v .` shows why the build was skipped)")
    path, prefix = os.environ.get("REVRNN_BLAS"), os.environ.get("REVRNN_BLAS_PREFIX", "")
    if not path:
        try:
            import scipy_openblas32 as openblas
        except ImportError:
            return None, ("its BLAS is missing: install scipy-openblas32 (a dependency of revrnn), "
                          "or name a BLAS library in REVRNN_BLAS")
        path, prefix = os.path.join(openblas.get_lib_dir(), openblas.get_library(True)), "scipy_"
    error = C.load_blas(path, prefix)
    return (None, f"its BLAS did not load: {error}") if error else (C, None)


_C, _REASON = _load()
#: the CPU's chunk calls run on a team of torch.get_num_threads() threads
TARGET = TARGETS["cpu"] = Target("cpu", "cpu", _C, _REASON, lambda device: torch.get_num_threads())


class CpuBackend(CompiledBackend):
    """The compiled executor on CPU tensors for the cells whose family has executor glue;
    float32 and float64, and 16-bit inputs run in float32."""

    name = "cpu"
    device_type = "cpu"
