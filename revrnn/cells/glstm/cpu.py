"""Glue of the g-LSTM for the compiled executor (backend ``cpu``): the dense path (``glstm`` in
``csrc/include/revrnn/cells.h``), the LSTM update blended by each unit's time gate; the chunk's
gates (K, H) are the step's per-unit operand, and the gradients of ``mu`` and ``sigma`` follow
from theirs (:func:`.spec.time_gate_grads`). There is no sparse path on this backend yet."""
from __future__ import annotations

import torch

from ...backends.cpu import Executor
from .spec import GLSTMCell, time_gate_grads


class GLSTMExecutor(Executor):
    cell = "glstm"

    def unit(self, cell, p, chunk, dtype):
        t = torch.arange(chunk.t0, chunk.t0 + chunk.xp.shape[0], device=chunk.xp.device)
        return cell.time_gate(p, t).to(dtype)

    def unit_grads(self, cell, p, chunk, unit, dunit):
        return time_gate_grads(p, chunk.t0, unit, dunit)


def runners(backend):
    runner = GLSTMExecutor()
    return lambda cell: runner if type(cell) is GLSTMCell else None
