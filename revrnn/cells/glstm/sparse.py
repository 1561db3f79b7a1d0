"""What the g-LSTM's sparse paths share (the Triton runner and the compiled executor's): the two
settings their glue adds to its backend — ``glstm_sparse``, ``"auto"`` (sparse when at most half
the chunk's unit-steps are open), ``"always"`` or ``"never"``; and ``sparse_work``, what the sparse
path computed and skipped, summed over runs (:class:`SparseWork`) — and each step's open units."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: ``auto`` runs a chunk sparse when at most this fraction of its unit-steps is open
MAX_OPEN = 0.5


@dataclass
class SparseWork:
    """Unit-steps of the g-LSTM evaluated by the sparse path's forward passes (recomputation
    included) against the dense count: ``1 − open/total`` of the pointwise work, of the
    recurrent GEMM and of the kept activations is skipped."""

    open: int = 0
    total: int = 0

    @property
    def skipped_fraction(self) -> float:
        return 1.0 - self.open / self.total if self.total else 0.0


def add_settings(backend) -> None:
    backend.glstm_sparse = "auto"
    backend.sparse_work = SparseWork()


def use_sparse(backend, k: Tensor) -> bool:
    """Whether ``backend`` runs a chunk with time gates ``k`` (K, H) on the sparse path."""
    mode = backend.glstm_sparse
    return mode == "always" or (mode == "auto" and (k > 0).double().mean().item() <= MAX_OPEN)


def open_units(k: Tensor) -> tuple[list[int], Tensor]:
    """Per step the number of open units, and their indices concatenated."""
    nz = (k > 0).nonzero()
    return torch.bincount(nz[:, 0], minlength=k.shape[0]).tolist(), nz[:, 1]
