"""Glue of the MGU family for the compiled executor (backend ``cpu``): variant 0 (``mgu`` in
``csrc/include/revrnn/cells.h``; biases in the projection, two GEMMs per step)."""
from __future__ import annotations

from ...backends.cpu import Executor
from .spec import MGUCell


class MGUExecutor(Executor):
    cell = "mgu"


def runners(backend):
    runner = MGUExecutor()
    return lambda cell: runner if type(cell) is MGUCell and cell.variant == 0 else None
