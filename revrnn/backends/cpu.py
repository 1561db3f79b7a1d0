"""The compiled CPU backend: per step one torch GEMM and one fused C++ pointwise call.

The C++ core (``csrc/``, module ``revrnn._C``) is framework-free: it takes raw addresses,
sizes and a dtype flag. The families' glue (``revrnn/cells/<family>/cpu.py``) owns everything
torch: allocation, the GEMMs, and the checks that make handing out raw pointers safe (device,
dtype, shape, contiguity, with the helpers here), done once per chunk so that the per-step loop
is only a GEMM and a C++ call, with no host synchronisation.
"""
from __future__ import annotations

import importlib

import torch
from torch import Tensor

from .base import Backend, Chunk

try:
    _C = importlib.import_module("revrnn._C")
    _REASON = None
except ImportError as err:  # not built (no compiler, REVRNN_NO_EXT=1) or not loadable
    _C, _REASON = None, (f"the compiled extension revrnn._C is not built: {err} "
                         "(see docs/build.md; `pip install -v .` shows why the build was skipped)")


def flag(name: str, dtype: torch.dtype):
    """The C++ dtype flag for ``dtype``; the error names the tensor."""
    if dtype == torch.float32:
        return _C.DType.float32
    if dtype == torch.float64:
        return _C.DType.float64
    raise TypeError(f"backend 'cpu' supports float32 and float64, got {name} of dtype {dtype}; "
                    "use backend='reference'")


def check(name: str, t: Tensor, shape: tuple[int, ...], dtype: torch.dtype,
           contiguous: bool = True) -> None:
    """Raise unless ``t`` is what the C++ side will read or write through its address."""
    if t.device.type != "cpu":
        raise ValueError(f"backend 'cpu': {name} must be a CPU tensor, got device {t.device}")
    if t.dtype != dtype:
        raise TypeError(f"backend 'cpu': {name} must have dtype {dtype}, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"backend 'cpu': {name} must have shape {shape}, got {tuple(t.shape)}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"backend 'cpu': {name} must be contiguous")


def mask_address(chunk: Chunk, K: int, B: int) -> tuple[Tensor | None, int]:
    """The chunk's mask as contiguous bytes (torch.bool is one byte, 0 or 1) and its address
    (0: no mask). Callers hold on to the tensor while the address is in use."""
    if chunk.mask is None:
        return None, 0
    if chunk.mask.dtype != torch.bool:
        raise TypeError(f"backend 'cpu': mask must have dtype torch.bool, got {chunk.mask.dtype}")
    mask = chunk.mask.contiguous()
    check("mask", mask, (K, B), torch.bool)
    return mask, mask.data_ptr()


class CpuBackend(Backend):
    """The compiled executor on CPU tensors, float32 and float64, for the cells whose family has
    glue for it."""

    name = "cpu"

    def availability(self, device: torch.device) -> str | None:
        if _C is None:
            return _REASON
        if device.type != "cpu":
            return f"it runs on CPU tensors only, got a {device.type} device"
        return None

    def load_glue(self, families) -> None:
        if _C is not None:  # without the extension availability says why
            super().load_glue(families)
