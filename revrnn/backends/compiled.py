"""What the two compiled backends share: ``cpu`` runs the C++ executor of ``revrnn._C`` on CPU
tensors, ``cuda`` the same loops of ``revrnn._C_cuda`` on CUDA tensors (``csrc/``). Both modules
take the same chunk calls with raw addresses (``csrc/chunks.h``); a :class:`Target` is one of
them: the module, why it cannot run (not built, no GEMM library), what the argument that says
where a chunk runs is on a device, and the checks that make handing out addresses safe. The glue
(:mod:`.executor` and the families' ``executor.py``) picks the target of its tensors' device, so
one piece of glue serves both backends, and the CPU tests run the code the GPU runs.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor

from ..cells.family import Family
from .base import Backend, Chunk

#: input dtypes the executors take; 16-bit inputs run their chunks in float32 (:func:`compute_dtype`)
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


#: the largest size a GEMM takes: BLAS and cuBLAS sizes are 32-bit integers
GEMM_SIZE = 2**31 - 1


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a chunk runs in for inputs of ``dtype``: float32 for 16-bit inputs (states,
    GEMMs and pointwise math, as the Triton kernels keep states), else ``dtype``."""
    return torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype


class Target:
    """One compiled module and how to call it on its device type."""

    def __init__(self, backend: str, device_type: str, module: Any, reason: str | None,
                 where: Callable[[torch.device], Any]) -> None:
        self.backend, self.device_type, self.module, self.reason = backend, device_type, module, reason
        self._where = where

    def where(self, device: torch.device) -> Any:
        """The chunk calls' argument saying where they run (CPU: threads; CUDA: device, stream,
        workspace)."""
        return self._where(device)

    def flag(self, name: str, dtype: torch.dtype):
        """The module's dtype flag for ``dtype``; the error names the tensor."""
        if dtype == torch.float32:
            return self.module.DType.float32
        if dtype == torch.float64:
            return self.module.DType.float64
        raise TypeError(f"backend {self.backend!r} runs float32 and float64 (16-bit inputs in float32), "
                        f"got {name} of dtype {dtype}; use backend='reference'")

    def check(self, name: str, t: Tensor, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device,
              contiguous: bool = True) -> None:
        """Raise unless ``t`` is what the module will read or write through its address."""
        if t.device != device:
            raise ValueError(f"backend {self.backend!r}: {name} must be on {device}, got {t.device}")
        if t.dtype != dtype:
            raise TypeError(f"backend {self.backend!r}: {name} must have dtype {dtype}, got {t.dtype}")
        if tuple(t.shape) != shape:
            raise ValueError(f"backend {self.backend!r}: {name} must have shape {shape}, got {tuple(t.shape)}")
        if contiguous and not t.is_contiguous():
            raise ValueError(f"backend {self.backend!r}: {name} must be contiguous")
        rows = math.prod(shape[:-1])  # as the GEMMs see it: the leading sizes are one
        if max(rows, shape[-1] if shape else 0) > GEMM_SIZE:
            raise ValueError(f"backend {self.backend!r}: {name} of shape {shape} is {rows} rows of "
                             f"{shape[-1]}, but the GEMMs take sizes up to {GEMM_SIZE}; run shorter chunks "
                             "(checkpoint_every) or a smaller batch")

    def checker(self, device: torch.device) -> Callable[..., None]:
        """:meth:`check` bound to ``device``: ``check(name, t, shape, dtype, contiguous=True)``."""
        return lambda name, t, shape, dtype, contiguous=True: self.check(name, t, shape, dtype, device, contiguous)

    def mask(self, chunk: Chunk, K: int, B: int, device: torch.device) -> tuple[Tensor | None, int]:
        """The chunk's mask as contiguous bytes (torch.bool is one byte, 0 or 1) and its address
        (0: no mask). Callers hold on to the tensor while the address is in use."""
        if chunk.mask is None:
            return None, 0
        if chunk.mask.dtype != torch.bool:
            raise TypeError(f"backend {self.backend!r}: mask must have dtype torch.bool, got {chunk.mask.dtype}")
        mask = chunk.mask.contiguous()
        self.check("mask", mask, (K, B), torch.bool, device)
        return mask, mask.data_ptr()


#: the target of each device type, registered by the backends' modules (cpu.py, cuda.py)
TARGETS: dict[str, Target] = {}


def target(device: torch.device) -> Target:
    """The compiled module that runs tensors on ``device``; raises if none is registered."""
    found = TARGETS.get(device.type)
    if found is None:
        raise ValueError(f"the compiled executor does not run on {device.type} tensors")
    return found


def bind(device: torch.device) -> tuple[Target, Callable[..., None]]:
    """The target of ``device`` and its check bound to that device."""
    tg = target(device)
    return tg, tg.checker(device)


def layout(kind: str, name: str) -> tuple[dict | None, str | None]:
    """``cell_layout`` or ``reversible_layout`` (``kind``) of cell ``name`` from a built module (the
    same in every one, ``csrc/chunks.h``), or None and why not."""
    for tg in TARGETS.values():
        if tg.module is not None:
            try:
                return getattr(tg.module, kind)(name), None
            except ValueError as err:  # a module built from older sources: rebuild it
                return None, f"the compiled extension has no {name!r} cell ({err}); rebuild it"
    return None, "no compiled extension is built"


def address(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


class CompiledBackend(Backend):
    """A compiled executor on one device type; its glue is the families' ``executor`` modules. A
    runner that runs on some device types only says so in ``devices`` (None: every one)."""

    glue = "executor"
    traceable = False  # raw pointers into a C++ call
    backward_reads_xp = False  # the forward keeps what backward reads (every family's executor glue)
    dtypes = DTYPES
    device_type: str = ""

    @property
    def target(self) -> Target:
        return TARGETS[self.device_type]

    def availability(self, device: torch.device) -> str | None:
        if self.target.reason is not None:
            return self.target.reason
        if device.type != self.device_type:
            return f"it runs on {self.device_type.upper()} tensors only, got a {device.type} device"
        return None

    def load_glue(self, families: tuple[Family, ...]) -> None:
        if self.target.module is None:  # availability says why
            return
        super().load_glue(families)
        for cell, pick in list(self._pickers.items()):
            self._pickers[cell] = self._here(pick)

    def _here(self, pick):
        def here(cell):
            runner = pick(cell)
            devices = getattr(runner, "devices", None)
            return runner if devices is None or self.device_type in devices else None
        return here
