"""The CUDA backend: the compiled executor's loops on the GPU (``csrc/cuda``, module
``revrnn._C_cuda``): per step one cuBLAS GEMM and one fused pointwise kernel calling the same
per-element functions as the CPU executor; backward mirrors it, the weight gradients one GEMM per
chunk. The loop runs in C++ on the caller's current stream and never waits for the GPU; the
cuBLAS workspace is a torch tensor (one per device and stream), so torch's allocator and memory
statistics see it.

cuBLAS is loaded at run time: the library torch has loaded (so both share one), else
``REVRNN_CUBLAS`` or the system's ``libcublas.so``. The glue is the CPU backend's
(:mod:`.executor`, the families' ``executor.py``); 16-bit inputs run in float32.
"""
from __future__ import annotations

import importlib
import os

import torch

from .compiled import TARGETS, CompiledBackend, Target

#: cuBLAS's workspace per device and stream; what NVIDIA recommends for Hopper (smaller suffices before it)
WORKSPACE_BYTES = {9: 32 << 20}
DEFAULT_WORKSPACE_BYTES = 4 << 20


def _cublas_candidates() -> list[str]:
    """Where cuBLAS may be: REVRNN_CUBLAS, the copy this process has loaded (torch's), the
    sonames of CUDA 13 and 12."""
    found = [os.environ["REVRNN_CUBLAS"]] if os.environ.get("REVRNN_CUBLAS") else []
    try:
        with open("/proc/self/maps") as maps:
            found += sorted({line.split()[-1] for line in maps if "/libcublas.so" in line})
    except OSError:  # not Linux
        pass
    return found + ["libcublas.so.13", "libcublas.so.12", "libcublas.so"]


def _load() -> tuple[object | None, str | None]:
    """The extension with cuBLAS loaded, or None and why not."""
    try:
        C = importlib.import_module("revrnn._C_cuda")
    except ImportError as err:
        return None, (f"the CUDA extension revrnn._C_cuda is not built: {err} (it is built when nvcc is "
                      "found at install; see docs/build.md)")
    if not torch.cuda.is_available():  # cuBLAS is loaded when there is a GPU to use it on
        return C, "no CUDA device is available to torch"
    errors = []
    for path in _cublas_candidates():
        error = C.load_cublas(path)
        if not error:
            return C, None
        errors.append(error)
    return None, "cuBLAS did not load: " + "; ".join(errors)


_C_cuda, _REASON = _load()
_workspaces: dict[tuple[int, int], torch.Tensor] = {}


def where(device: torch.device) -> list[int]:
    """[device, stream, workspace, bytes]: the current stream of ``device`` and its workspace."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    stream = torch.cuda.current_stream(index).cuda_stream
    ws = _workspaces.get((index, stream))
    if ws is None:
        size = WORKSPACE_BYTES.get(torch.cuda.get_device_capability(index)[0], DEFAULT_WORKSPACE_BYTES)
        ws = _workspaces[(index, stream)] = torch.empty(size, dtype=torch.uint8, device=torch.device("cuda", index))
    return [index, stream, ws.data_ptr(), ws.numel()]


TARGET = TARGETS["cuda"] = Target("cuda", "cuda", _C_cuda, _REASON, where)


class CudaBackend(CompiledBackend):
    """The compiled executor on CUDA tensors, for the cells whose executor glue runs there."""

    name = "cuda"
    offers_graphs = True
    device_type = "cuda"
