"""Glue of the Elman RNN for the compiled executor (backends ``cpu`` and ``cuda``): ``elman_tanh`` and
``elman_relu`` in ``csrc/include/revrnn/cells.h``; both biases are in the projection."""
from __future__ import annotations

from ...backends.executor import Executor
from .spec import ElmanCell


def runners(backend):
    by_nonlinearity = {"tanh": Executor("elman_tanh"), "relu": Executor("elman_relu")}
    return lambda cell: by_nonlinearity[cell.nonlinearity] if type(cell) is ElmanCell else None
