"""Glue of the LSTM family for the compiled executor (backend ``cpu``): torch.nn's LSTM without
projection (``lstm`` in ``csrc/include/revrnn/cells.h``); its biases are in the projection."""
from __future__ import annotations

from ...backends.cpu import Executor
from .spec import LSTMCell


class LSTMExecutor(Executor):
    cell = "lstm"


def runners(backend):
    runner = LSTMExecutor()
    return lambda cell: runner if type(cell) is LSTMCell and cell.proj_size == 0 else None
