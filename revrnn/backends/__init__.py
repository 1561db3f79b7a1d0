"""Backend registry: ``backend="auto" | "reference" | "triton" | "cuda" | "cpu"``.

A backend registers under a name with :func:`register`. ``auto`` picks, for the tensors'
device, the first backend in :data:`AUTO_ORDER` that is available, meant for that device type
(``Backend.auto_devices``: triton only on CUDA) and supports the cell for the dtype the steps
will see (autocast's, where it is on) — under ``torch.compile``, among those it can trace;
the reference backend supports everything and is always available.
"""
from __future__ import annotations

import torch

from ..cells import FAMILIES
from ..cells.base import CellSpec
from .base import Backend, BackendUnavailable, Chunk, Runner
from .cpu import CpuBackend
from .cuda import CudaBackend
from .reference import ReferenceBackend
from .triton import TritonBackend

__all__ = ["Backend", "BackendUnavailable", "Chunk", "Runner", "register", "get_backend", "resolve",
           "available_backends", "AUTO_ORDER", "NAMES"]

#: Every backend name the API accepts, whether or not it is built here.
NAMES = ("auto", "reference", "triton", "cuda", "cpu")
#: Preference of ``auto``. On CUDA tensors Triton comes first where both GPU backends run a cell:
#: neither has been measured on a GPU yet, and the Triton kernels are the ones compiled for sm_90
#: in CI; the CUDA executor serves the cells Triton lacks (the Elman RNN).
AUTO_ORDER = ("triton", "cuda", "cpu", "reference")

_REGISTRY: dict[str, Backend] = {}


def register(backend: Backend) -> Backend:
    """Make ``backend`` available under its name, with the glue of every catalog family for it."""
    backend.load_glue(FAMILIES)
    _REGISTRY[backend.name] = backend
    return backend


register(ReferenceBackend())
register(CpuBackend())  # registered even when revrnn._C is not built: it then says why
register(TritonBackend())  # likewise without Triton
register(CudaBackend())  # likewise without revrnn._C_cuda, cuBLAS or a GPU


def check_name(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"backend must be one of {', '.join(map(repr, NAMES))}, got {name!r}")
    return name


def get_backend(name: str, device: torch.device) -> Backend:
    """The backend called ``name``; raises :class:`BackendUnavailable` if it cannot run on ``device``."""
    check_name(name)
    backend = _REGISTRY.get(name)
    if backend is None:
        raise BackendUnavailable(f"backend {name!r} is not available: it is not implemented in this build")
    reason = backend.availability(device)
    if reason is not None:
        raise BackendUnavailable(f"backend {name!r} is not available on {device}: {reason}")
    return backend


def resolve(name: str, cell: CellSpec, device: torch.device, dtype: torch.dtype = torch.float32) -> Backend:
    """The backend that runs ``cell`` on ``device`` for ``dtype`` inputs: ``name`` itself, or
    ``auto``'s choice."""
    if check_name(name) != "auto":
        backend = get_backend(name, device)
        if not backend.supports(cell, dtype):
            reason = backend.unsupported_reason(cell, dtype)
            raise BackendUnavailable(f"backend {name!r} does not implement the {cell.name} cell "
                                     f"({type(cell).__name__}) for {dtype}{f': {reason}' if reason else ''}; "
                                     "use backend='reference' or 'auto'")
        return backend
    # what the chunks will see: autocast turns the projection into its own dtype; and a backend
    # that torch.compile cannot trace (raw pointers) would break the graph
    if torch.is_autocast_enabled(device.type):
        dtype = torch.get_autocast_dtype(device.type)
    compiling = torch.compiler.is_compiling()
    for candidate in AUTO_ORDER:
        backend = _REGISTRY.get(candidate)
        if backend is None or (backend.auto_devices is not None and device.type not in backend.auto_devices):
            continue
        if compiling and not backend.traceable:
            continue
        if backend.availability(device) is None and backend.supports(cell, dtype):
            return backend
    raise AssertionError("the reference backend supports every cell")  # pragma: no cover


def available_backends(device: torch.device | str = "cpu") -> dict[str, str | None]:
    """For each backend name: ``None`` if it runs on ``device``, else why it does not."""
    device = torch.device(device)
    out: dict[str, str | None] = {}
    for name in NAMES[1:]:
        backend = _REGISTRY.get(name)
        out[name] = "not implemented in this build" if backend is None else backend.availability(device)
    return out
