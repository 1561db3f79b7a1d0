"""Glue of the KAF-gated cells for the compiled executor (backends ``cpu`` and ``cuda``): the LSTM (``kaf_lstm``;
revrnn.nn.KAFLSTM has no ``proj_size``) and the reset-after GRU (``kaf_gru``) with KAF gates
(``csrc/include/revrnn/gates.h``: KafGate). The step reads ``[D, γ, kaf_dict, kaf_alpha]`` as
one flat operand and accumulates ``kaf_alpha``'s gradient over the chunk."""
from __future__ import annotations

import torch

from ...backends.executor import Executor
from ..gru.executor import GRUExecutor
from .spec import KAFGRUCell, KAFLSTMCell


class KAFParams:
    """The KAF operand of the step and the gradient of ``kaf_alpha`` (mixed in before an Executor)."""

    def params(self, cell, p):
        alpha = p["kaf_alpha"]
        head = alpha.new_tensor([cell.kaf_size, cell.gamma])
        return torch.cat((head, p["kaf_dict"].to(alpha.dtype), alpha.reshape(-1)))

    def params_grads(self, cell, p, dparams):
        alpha = p["kaf_alpha"]
        return {"kaf_alpha": dparams[2 + cell.kaf_size:].view_as(alpha) if alpha.requires_grad else None}


class KAFLSTMExecutor(KAFParams, Executor):
    pass


class KAFGRUExecutor(KAFParams, GRUExecutor):
    pass


def runners(backend):
    lstm, gru = KAFLSTMExecutor("kaf_lstm"), KAFGRUExecutor("kaf_gru")

    def pick(cell):
        if type(cell) is KAFLSTMCell:
            return None if cell.proj_size else lstm
        return gru if type(cell) is KAFGRUCell else None
    return pick
