"""Glue of the MGU family for the compiled executor (backends ``cpu`` and ``cuda``): variants 0–2 (``mgu``,
``mgu1``, ``mgu2`` in ``csrc/include/revrnn/cells.h``), the GRU family's reset-before executor
with one gate; variant 3 on variant 1's executor with a zero gate row block (the GRU family's
``BiasGates``)."""
from __future__ import annotations

from ..gru.executor import BiasGatesResetBefore, ResetBeforeExecutor, variant_name
from .spec import MGUCell


def runners(backend):
    by_variant = {v: ResetBeforeExecutor(variant_name("mgu", v)) for v in (0, 1, 2)}
    by_variant[3] = BiasGatesResetBefore(variant_name("mgu", 1))
    return lambda cell: by_variant.get(cell.variant) if type(cell) is MGUCell else None
