"""Glue of the GRU family for the compiled executor (backend ``cpu``): torch.nn's GRU
(reset-after, variant 0; ``gru`` in ``csrc/include/revrnn/cells.h``). ``bias_hh`` is added to
``h W_hh^T`` inside the step (b_hn sits inside ``r (W_hn h + b_hn)``), so its gradient is the
sum of ``d rec`` over the chunk."""
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


def runners(backend):
    runner = GRUExecutor()
    return lambda cell: runner if type(cell) is GRUCell and cell.reset_after and cell.variant == 0 else None
