"""Glue of the light family for the compiled executor (backends ``cpu`` and ``cuda``): the LiGRU (``ligru`` in
``csrc/include/revrnn/cells.h``), with its recurrent-dropout mask as the step's operand, and the
LiBRU (``libru``, ``libru_logprobs``), whose recurrent GEMM reads log h in the probs form; batch
norm is in the projection."""
from __future__ import annotations

from ...backends.executor import Executor
from .libru import LiBRUCell
from .ligru import LiGRUCell


class LiGRUExecutor(Executor):
    cell = "ligru"

    def aux(self, cell, extras, B, like):
        mask = extras.get("drop_mask")
        return like.new_ones(B, cell.hidden_size) if mask is None else mask


def runners(backend):
    ligru = LiGRUExecutor()
    libru = {"probs": Executor("libru"), "logprobs": Executor("libru_logprobs")}

    def pick(cell):
        if type(cell) is LiGRUCell:
            return ligru
        return libru[cell.form] if type(cell) is LiBRUCell else None
    return pick
