"""Triton glue of the MGU family: the GRU family's reset-before runner, with one gate."""
from __future__ import annotations

from ..gru.triton import ResetBeforeRunner


def runners(backend):
    runner = ResetBeforeRunner()
    return lambda cell: runner
