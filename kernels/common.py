"""What every kernel module shares: whether Triton can run here, output allocation (poisoned on
request, so that a test sees any element a kernel forgot to write), launch geometry, and the
pointwise activations in float32.

Importing this module needs Triton; :func:`triton_reason` tells why the kernels cannot run on a
device.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

#: Set by tests: new outputs are filled with NaN (floats) or :data:`INT_POISON` (integers)
#: before a kernel writes them, instead of left uninitialised.
POISON = False
INT_POISON = -0x5A5A5A5A5A5A5A5A
#: Elements per program of the flat pointwise kernels.
BLOCK = 1024


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET=1``)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def triton_reason(device: torch.device) -> str | None:
    """``None`` if the Triton kernels can run on ``device``, otherwise why not."""
    if device.type == "cpu":
        return None if interpreting() else ("on CPU tensors it needs the Triton interpreter: set "
                                            "TRITON_INTERPRET=1 before importing revrnn")
    if device.type != "cuda":
        return f"it runs on CUDA tensors (or CPU under TRITON_INTERPRET=1), got a {device.type} device"
    return None


def new(shape, dtype: torch.dtype, device: torch.device) -> Tensor:
    """An output buffer; NaN- or :data:`INT_POISON`-filled when :data:`POISON` is set."""
    out = torch.empty(shape, dtype=dtype, device=device)
    if POISON:
        out.fill_(float("nan") if dtype.is_floating_point else INT_POISON)
    return out


def grid(n: int, block: int = BLOCK) -> tuple[int]:
    return (triton.cdiv(max(n, 1), block),)


def mask_arg(mask: Tensor | None, like: Tensor) -> tuple[Tensor, bool]:
    """A mask tensor for a kernel (``like`` as a harmless stand-in when there is none) and
    whether it is real; the kernel reads it only when the flag is set."""
    return (like, False) if mask is None else (mask.contiguous(), True)


def state_dtype(dtype: torch.dtype) -> torch.dtype:
    """What the kernels carry states and gradients in: float32, or float64 for float64 input."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def compute_type(t: Tensor):
    """The Triton type of the arithmetic for a state tensor ``t``."""
    return tl.float64 if t.dtype == torch.float64 else tl.float32


@triton.jit
def units(N, H, BLOCK: tl.constexpr):
    """This program's flat offsets into a (B, H) step, which are in range, their rows and units."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < N, offs // H, offs % H


@triton.jit
def valid_rows(mask, b, ok, HAS_MASK: tl.constexpr):
    """Elements in range whose row is a valid step (``mask`` true) of a variable-length batch."""
    if HAS_MASK:
        return ok & (tl.load(mask + b, mask=ok) != 0)
    return ok


@triton.jit
def sigmoid(x):
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def tanh(x):
    # 2σ(2x) - 1: no overflow for large |x| (exp(-2x) -> inf gives -1, -> 0 gives 1)
    return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0
