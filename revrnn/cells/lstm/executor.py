"""Glue of the LSTM family for the compiled executor (backends ``cpu`` and ``cuda``): torch.nn's LSTM, without
projection (``lstm`` in ``csrc/include/revrnn/cells.h``) and with ``proj_size`` (``lstm_proj``: the
executor projects h = o tanh(c) W_hr^T after each step); its biases are in the projection."""
from __future__ import annotations

from ...backends.executor import Executor
from .spec import LSTMCell


def runners(backend):
    plain, projected = Executor("lstm"), Executor("lstm_proj")
    return lambda cell: (projected if cell.proj_size else plain) if type(cell) is LSTMCell else None
