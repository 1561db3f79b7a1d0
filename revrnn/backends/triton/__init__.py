"""The Triton backend: per step one recurrent GEMM through torch (cuBLAS on GPU) and one fused
Triton pointwise kernel; the backward walks the chunk in reverse with one fused kernel and one
GEMM per step, then computes the chunk's weight gradients as one GEMM over all its steps.

Kernels live in :mod:`revrnn.kernels` (``kernels/`` in the source tree), one module per cell
family. Each family's glue (``revrnn/cells/<family>/triton.py``) hands out its *runners*
(:class:`~revrnn.backends.base.Runner`), which own allocation, dtypes and the GEMMs; what they
share is in :mod:`.runner`. A cell whose family has no runner is not supported (``auto`` then
falls back to the next backend).

Dtypes: float32, float64, bfloat16 and float16 inputs. GEMMs run in the input dtype; states,
their gradients and all pointwise arithmetic are float32 (float64 for float64 input), so a
low-precision run accumulates its state in float32 within a chunk. States are handed back to
the engine in the input dtype (the cell's state dtype) at chunk ends.

On CPU tensors the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set before
revrnn is imported), which is how CI tests them; ``auto`` never picks this backend on CPU.
"""
from __future__ import annotations

import torch

from ..base import Backend
from .runner import MISSING, common

__all__ = ["TritonBackend", "DTYPES"]

#: input dtypes the kernels take
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class TritonBackend(Backend):
    """Fused Triton kernels; see the module docstring. ``auto`` picks it on CUDA tensors only.

    A family's glue may add settings of its own when it is loaded (see its ``triton.py``)."""

    name = "triton"
    offers_graphs = True
    backward_reads_xp = False  # every runner's backward reads its residuals (the chunk's shape at most)
    auto_devices = ("cuda",)
    dtypes = DTYPES

    def __init__(self) -> None:
        super().__init__()
        #: the persistent whole-chunk kernels of :mod:`revrnn.kernels.persistent` for the cells
        #: that have them: ``"never"`` (default until they have been measured on a GPU),
        #: ``"auto"`` (CUDA, H ≤ 128, batch ≤ :attr:`persistent_max_batch`) or ``"always"``
        #: (wherever they apply: H ≤ 128, no float64)
        self.persistent = "never"
        self.persistent_max_batch = 64

    def wants_persistent(self, like: torch.Tensor) -> bool:
        """Whether the ``persistent`` setting asks for the persistent kernels on tensors like
        ``like`` (K, B, ·), where a cell's runner has them."""
        return self.persistent == "always" or (
            self.persistent == "auto" and like.is_cuda and like.shape[1] <= self.persistent_max_batch)

    def load_glue(self, families) -> None:
        if MISSING is None:  # without Triton there are no runners, and availability says why
            super().load_glue(families)

    def availability(self, device: torch.device) -> str | None:
        return MISSING or common.triton_reason(device)
