"""Glue of the GRU family for the compiled executor (backends ``cpu`` and ``cuda``): the reset-after GRU of
variants 0–2 (``gru``, ``gru1``, ``gru2`` in ``csrc/include/revrnn/cells.h``; variant 0 is
torch.nn's GRU) and the reset-before GRU of variants 0–2 (``gru_reset_before``, ``gru1_reset_before``,
``gru2_reset_before``: two GEMMs per step, the candidate's biases in the projection, the gate
bias ``bias_gates`` of variant 1 added in the step). Variant 3 (gates from the bias alone) runs
on variant 1's executor with zero gate rows in the recurrent weight (:class:`BiasGates`): exact,
at the cost of the gates' share of the recurrent GEMMs, which multiplies zeros.

The reset-after step adds a (3H) bias to ``h W_hh^T`` — ``bias_hh`` in variant 0; in variants 1
and 2 the gate bias ``bias_gates`` (variant 1) and the candidate's ``b_hn`` (``bias_hh``), zeros
where the cell has none — so those parameters' gradients are sums of ``d rec`` over the chunk."""
from __future__ import annotations

import torch

from ...backends.executor import Executor
from .spec import GRUCell


class GRUExecutor(Executor):
    def rec_bias(self, cell, p):
        H = cell.hidden_size
        if cell.variant == 0:
            return p["bias_hh"] if cell.bias else None
        if "bias_gates" not in p and not cell.bias:
            return None
        like = p["weight_hh"]
        gates = p["bias_gates"] if "bias_gates" in p else like.new_zeros(2 * H)
        return torch.cat((gates, p["bias_hh"] if cell.bias else like.new_zeros(H)))

    def rec_bias_grads(self, cell, p, drec):
        H = cell.hidden_size
        names = {"bias_hh": slice(0, 3 * H)} if cell.variant == 0 else {"bias_gates": slice(0, 2 * H),
                                                                         "bias_hh": slice(2 * H, 3 * H)}
        present = [name for name in names if name in p]
        if not present:
            return {}
        total = drec.sum((0, 1))
        return {name: total[names[name]] if p[name].requires_grad else None for name in present}


class BiasGates:
    """Variant 3 on variant 1's executor (mixed in before it): the gate rows of the step's
    recurrent weight are zero, so the gates' GEMM columns are 0 and σ sees the gate bias alone."""

    def recurrent_weight(self, cell, p):
        w = p["weight_hh"]
        return torch.cat((w.new_zeros(self.gates * cell.hidden_size - w.shape[0], w.shape[1]), w))

    def recurrent_weight_grad(self, cell, p, dw):
        return None if dw is None else dw[-cell.hidden_size:]


class ResetBeforeExecutor(Executor):
    """The reset-before cells (this family's and the MGU's): ``bias_gates``, where the variant
    has it, is the gates' part of the step's bias; the candidate's part is zero."""

    def rec_bias(self, cell, p):
        if "bias_gates" not in p:
            return None
        return torch.cat((p["bias_gates"], p["bias_gates"].new_zeros(cell.hidden_size)))

    def rec_bias_grads(self, cell, p, drec):
        if "bias_gates" not in p:
            return {}
        gates = p["bias_gates"]
        return {"bias_gates": drec[..., :gates.shape[0]].sum((0, 1)) if gates.requires_grad else None}


def variant_name(family: str, variant: int) -> str:
    """The executor's name of a cell of ``family`` (``gru``, ``mgu``) and gate variant."""
    return family if variant == 0 else f"{family}{variant}"


class BiasGatesGRU(BiasGates, GRUExecutor):
    pass


class BiasGatesResetBefore(BiasGates, ResetBeforeExecutor):
    pass


def runners(backend):
    after = {v: GRUExecutor(variant_name("gru", v)) for v in (0, 1, 2)}
    after[3] = BiasGatesGRU(variant_name("gru", 1))
    before = {v: ResetBeforeExecutor(variant_name("gru", v) + "_reset_before") for v in (0, 1, 2)}
    before[3] = BiasGatesResetBefore(variant_name("gru", 1) + "_reset_before")

    def pick(cell):
        if type(cell) is not GRUCell:
            return None
        return (after if cell.reset_after else before).get(cell.variant)
    return pick
