"""``revrnn.nn.RevGRU``: the exactly reversible GRU of MacKay et al. (2018)."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.reversible.revgru import RevGRUCell
from .reversible import ReversibleBase


class RevGRU(ReversibleBase):
    r"""Multi-layer reversible GRU whose training memory does not grow with sequence length.

    The state of each layer is split into halves h1, h2 of ``hidden_size / 2`` units. Half 1 is
    updated from x and the old h2, half 2 from x and the new h1 (equations in
    :mod:`revrnn.cells.reversible.revgru`). States are fixed point (int64, 23 fractional bits); each
    multiply by a forget gate is exactly invertible thanks to an information buffer that keeps
    the bits it discards, so backward reconstructs every state from the final one.

    Args:
        input_size, hidden_size, num_layers, bias, batch_first, device, dtype: as in
            :class:`torch.nn.GRU`; ``hidden_size`` must be even.
        bidirectional: only ``False`` (kept in the signature shared by revrnn modules).
        dropout: dropout on the input of every layer but the first, with one mask per sequence
            (locked dropout) so that the reverse pass replays it; torch.nn.GRU draws a new mask
            at every step instead.
        forget_bits: k. Forget gates are restricted to [2**-k, 1], so each multiply stores at most
            k bits (the paper's max_forget = 1 - 2**-k; 3 is its default). ``0`` gives the
            no-forgetting RevGRU: h <- h + (1 - z) ⊙ g, no buffer at all.
        memory: ``"reversible"`` (default): backward reconstructs the states; activation memory
            is the buffer, which stores -log2 z <= k bits per unit and step plus the words'
            slack (``last_stats`` reports both). ``"store"``: the same quantised forward with
            every activation stored (plain autograd), the comparison baseline.
        verify: keep a copy of the initial state (O(layers · batch · hidden)) and raise
            ``RuntimeError`` in backward unless the reconstructed one is bit-identical (default).
            Independently, backward always checks that the buffer comes back empty.
        chunk_size: steps per chunk: the buffer arena grows once per chunk (one host sync), and
            backward batches weight-gradient GEMMs per chunk. Default: 64, fewer for deep stacks.
        backend: ``"auto"``, ``"reference"`` or ``"triton"`` (each half-update one fused Triton
            kernel around its GEMMs; Triton's σ/tanh make it agree with ``"reference"`` closely,
            not bit for bit, and it reverses its own forward exactly; ``auto`` uses it on CUDA
            tensors when Triton is available).

    ``forward(input, h_0=None)`` returns ``output, h_n`` like torch.nn.GRU; ``h_n`` is the true
    final state. After each forward, :attr:`last_stats` holds the buffer accounting
    (:class:`revrnn.cells.reversible.function.BufferStats`). Backward consumes the buffer, so a graph
    can be backpropagated once (no ``retain_graph``) and double backward is not supported.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 forget_bits: int = 3, device: Any = None,
                 dtype: torch.dtype | None = None, *, memory: str = "reversible", verify: bool = True,
                 chunk_size: int | None = None, backend: str = "auto") -> None:
        super().__init__(RevGRUCell, input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, forget_bits, device, dtype, memory=memory, verify=verify, chunk_size=chunk_size,
                         backend=backend)
