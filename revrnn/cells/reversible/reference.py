"""Reference glue of the reversible cells: each half-update as the cell spec's torch ops
around the integer core (:func:`~.function._step`, :func:`~.function._step_back`), with the
torch information buffer."""
from __future__ import annotations

from .base import RevCellSpec
from .function import Halves, _step, _step_back


def runners(backend):
    return TorchHalf


class TorchHalf(Halves):
    """The half-updates of one reversible cell in torch ops."""

    def __init__(self, cell: RevCellSpec) -> None:
        self.cell = cell

    def step(self, *args):
        return _step(self.cell, *args)

    def step_back(self, *args):
        return _step_back(self.cell, *args)

    def refusal(self, cell: RevCellSpec) -> str | None:
        return None
