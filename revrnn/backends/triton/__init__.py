"""The Triton backend: per step one recurrent GEMM through torch (cuBLAS on GPU) and one fused
Triton pointwise kernel; the backward walks the chunk in reverse with one fused kernel and one
GEMM per step, then computes the chunk's weight gradients as one GEMM over all its steps.

Kernels live in :mod:`revrnn.kernels` (``kernels/`` in the source tree), one module per cell
family; this module owns allocation, dtypes and the GEMMs. Each cell family has a *runner*
(:class:`Runner`) that the backend picks by cell type; a cell without one is not supported
(``auto`` then falls back to the next backend).

Dtypes: float32, float64, bfloat16 and float16 inputs. GEMMs run in the input dtype; states,
their gradients and all pointwise arithmetic are float32 (float64 for float64 input), so a
low-precision run accumulates its state in float32 within a chunk. States are handed back to
the engine in the input dtype (the cell's state dtype) at chunk ends.

On CPU tensors the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set before
revrnn is imported), which is how CI tests them; ``auto`` never picks this backend on CPU.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...cells.base import CellSpec
from ...cells.glstm import GLSTMCell
from ...cells.gru import GRUCell
from ...cells.kaf import KAFGRUCell, KAFLSTMCell
from ...cells.libru import LiBRUCell
from ...cells.ligru import LiGRUCell
from ...cells.lstm import LSTMCell
from ...cells.mgu import MGUCell
from ...cells.nru import NRUCell
from ..base import Backend
from .gru import GRURunner, ResetBeforeRunner
from .light import LightRunner
from .lstm import LSTMRunner, SparseGLSTMRunner, SparseWork
from .nru import NRURunner
from .runner import MISSING, Runner, common, kernels

__all__ = ["TritonBackend", "Runner", "SparseWork", "DTYPES"]

#: input dtypes the kernels take
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


class TritonBackend(Backend):
    """Fused Triton kernels; see the module docstring. ``auto`` picks it on CUDA tensors only."""

    name = "triton"
    auto_devices = ("cuda",)

    def __init__(self) -> None:
        #: the persistent whole-chunk kernels of :mod:`revrnn.kernels.persistent` for torch.nn's
        #: LSTM and GRU: ``"never"`` (default until they have been measured on a GPU),
        #: ``"auto"`` (CUDA, H ≤ 128, batch ≤ :attr:`persistent_max_batch`) or ``"always"``
        #: (wherever they apply: H ≤ 128, no float64)
        self.persistent = "never"
        self.persistent_max_batch = 64
        #: g-LSTM: ``"auto"`` (sparse when at most half the chunk's unit-steps are open),
        #: ``"always"`` or ``"never"`` (dense: every unit computed, closed ones passed through)
        self.glstm_sparse = "auto"
        #: what the g-LSTM's sparse path computed and skipped, summed over runs
        self.sparse_work = SparseWork()
        self._runners: dict[type, Runner] = {
            LSTMCell: LSTMRunner(self), KAFLSTMCell: LSTMRunner(self), GLSTMCell: SparseGLSTMRunner(self),
            MGUCell: ResetBeforeRunner(), LiGRUCell: LightRunner(), LiBRUCell: LightRunner(),
            NRUCell: NRURunner()}
        self._gru = {True: GRURunner(self), False: ResetBeforeRunner()}

    def use_persistent(self, cell: CellSpec, like: Tensor) -> bool:
        """Whether the persistent kernels run ``cell`` on tensors like ``like`` (K, B, ·)."""
        if self.persistent == "never" or like.dtype not in kernels.persistent.DTYPES:
            return False
        if type(cell) is LSTMCell:
            # Triton 3.9 aborts compiling the float32 LSTM backward for sm_90 (an LLVM
            # SLP-vectorizer assertion; tests/test_gpu_compile.py tracks it): step kernels there
            fits = cell.proj_size == 0 and not (like.is_cuda and like.dtype == torch.float32)
        else:
            fits = type(cell) is GRUCell and cell.reset_after and cell.variant == 0
        if not (fits and kernels.persistent.supported(cell.hidden_size)):
            return False
        return self.persistent == "always" or (like.is_cuda and like.shape[1] <= self.persistent_max_batch)

    def runner_for(self, cell: CellSpec) -> Runner | None:
        """The runner of ``cell``'s family, or None if no Triton kernels implement it (cell
        types are matched exactly: a subclass, e.g. a KAF-gated cell, changes the step)."""
        kind = type(cell)
        if kind is GRUCell:
            return self._gru[cell.reset_after]
        if kind is KAFGRUCell:  # reset-after, variant 0
            return self._gru[True]
        if kind is NRUCell and not kernels.nru.supported(cell.memory_size, cell.num_heads):
            return None
        return self._runners.get(kind)

    def availability(self, device: torch.device) -> str | None:
        return MISSING or common.triton_reason(device)

    def supports(self, cell: CellSpec, dtype: torch.dtype) -> bool:
        return dtype in DTYPES and self.runner_for(cell) is not None

    def unsupported_reason(self, cell: CellSpec, dtype: torch.dtype) -> str | None:
        if type(cell) is NRUCell and not kernels.nru.supported(cell.memory_size, cell.num_heads):
            return (f"memory_size={cell.memory_size} with num_heads={cell.num_heads} gives a row tile "
                    f"larger than Triton's largest tensor ({kernels.nru.MAX_TILE} elements)")
        return None

    def forward_chunk(self, cell, p, extras, chunk, state, keep):
        with torch.no_grad():
            return self.runner_for(cell).forward(cell, p, extras, chunk, state, keep)

    def backward_chunk(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        with torch.no_grad():
            return self.runner_for(cell).backward(cell, p, extras, chunk, residuals, grad_out, grad_state)
