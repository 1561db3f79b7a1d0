"""Glue of the GRU family for the compiled executor (backend ``cpu``), variant 0: torch.nn's GRU
(reset-after, ``gru`` in ``csrc/include/revrnn/cells.h``), whose ``bias_hh`` is added to
``h W_hh^T`` inside the step (b_hn sits inside ``r (W_hn h + b_hn)``), so its gradient is the sum
of ``d rec`` over the chunk; and the reset-before GRU (``gru_reset_before``, biases in the
projection, two GEMMs per step)."""
from __future__ import annotations

from ...backends.cpu import Executor
from .spec import GRUCell


class GRUExecutor(Executor):
    cell = "gru"

    def rec_bias(self, cell, p):
        return p["bias_hh"] if cell.bias else None

    def rec_bias_grads(self, cell, p, drec):
        if not cell.bias:
            return {}
        return {"bias_hh": drec.sum((0, 1)) if p["bias_hh"].requires_grad else None}


class ResetBeforeExecutor(Executor):
    cell = "gru_reset_before"


def runners(backend):
    after, before = GRUExecutor(), ResetBeforeExecutor()

    def pick(cell):
        if type(cell) is not GRUCell or cell.variant != 0:
            return None
        return after if cell.reset_after else before
    return pick
