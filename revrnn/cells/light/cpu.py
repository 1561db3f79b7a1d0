"""Glue of the light family for the compiled executor (backend ``cpu``): the LiGRU (``ligru`` in
``csrc/include/revrnn/cells.h``), with its recurrent-dropout mask as the step's operand; batch
norm is in the projection. The LiBRU has no executor yet."""
from __future__ import annotations

from ...backends.cpu import Executor
from .ligru import LiGRUCell


class LiGRUExecutor(Executor):
    cell = "ligru"

    def aux(self, cell, extras, B, like):
        mask = extras.get("drop_mask")
        return like.new_ones(B, cell.hidden_size) if mask is None else mask


def runners(backend):
    runner = LiGRUExecutor()
    return lambda cell: runner if type(cell) is LiGRUCell else None
