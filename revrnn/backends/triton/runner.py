"""What the Triton runners of every family share: the kernel package (each family's glue
imports its own kernel modules), a chunk's buffers and the gradient helpers."""
from __future__ import annotations

import torch
from torch import Tensor

from ...cells.base import CellSpec, Params, State
from ..base import Chunk

try:  # at import, not first use: torch.compile cannot trace an import
    from ... import kernels
    from ...kernels import common
    MISSING = None
except ImportError as err:  # Triton is not installed
    kernels = common = None
    MISSING = f"Triton is not importable ({err}); pip install triton"
except Exception as err:  # installed but broken, e.g. a version whose API the kernels do not fit
    kernels = common = None
    MISSING = f"Triton failed to import ({type(err).__name__}: {err}); revrnn is tested with triton 3.9"


class ChunkBuffers:
    """Buffers of one chunk of K steps: float states ``(K + 1)`` rows deep when kept for
    backward, else two rows used alternately."""

    def __init__(self, chunk: Chunk, state: State, keep: bool) -> None:
        self.xp = chunk.xp.contiguous()
        self.K, self.B = self.xp.shape[:2]
        self.dtype = self.xp.dtype
        self.sdtype = common.state_dtype(self.dtype)
        self.keep = keep
        rows = self.K + 1 if keep else 2
        self.states = []
        for s in state:
            buf = common.new((rows, *s.shape), self.sdtype, s.device)
            buf[0] = s
            self.states.append(buf)
        self.mask = chunk_mask(chunk)

    def new(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        return common.new(shape, dtype or self.sdtype, self.xp.device)

    def rows(self, i: int) -> tuple[int, int]:
        """Rows of the states before and after step ``i``."""
        return (i, i + 1) if self.keep else (i % 2, (i + 1) % 2)

    def mask_at(self, i: int) -> Tensor | None:
        return None if self.mask is None else self.mask[i]

    def end(self) -> State:
        """The state after the chunk, in the input dtype; copies, never views of the residuals."""
        last = self.K if self.keep else self.K % 2
        return tuple(s[last].to(self.dtype, copy=True) for s in self.states)


def grad_buffers(grad_state: State, sdtype: torch.dtype) -> list[Tensor]:
    """Fresh contiguous state-gradient buffers that the backward kernels update in place."""
    return [g.to(sdtype, memory_format=torch.contiguous_format, copy=True) for g in grad_state]


class SigmoidGates:
    """The gate hooks of the LSTM and reset-after GRU runners for σ gates; a family whose gates
    are learned functions overrides them in its own glue."""

    def gate_operands(self, cell: CellSpec, p: Params, sdtype: torch.dtype) -> list[Tensor]:
        """The kernels' gate-function operands: empty for σ gates."""
        return []

    def gate_grads(self, p: Params, operands: list[Tensor], act: Tensor, dgate_fn: Tensor, hidden: int,
                   skip: int) -> dict:
        """Parameter gradients of the :meth:`gate_operands`."""
        return {}


def chunk_mask(chunk: Chunk) -> Tensor | None:
    """The chunk's mask as contiguous bytes for the kernels."""
    return None if chunk.mask is None else chunk.mask.to(torch.uint8).contiguous()
