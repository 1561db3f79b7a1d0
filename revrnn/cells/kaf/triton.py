"""Triton glue of the KAF-gated cells: the LSTM and reset-after GRU runners with the KAF
operands (:mod:`revrnn.kernels.kaf`): the kept activations hold the gates' pre-activations, the
kernels also write ``∂L/∂KAF``, and one reduction per chunk gives ``kaf_alpha`` its gradient."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...backends.triton.runner import kernels
from ...kernels import kaf  # noqa: F401 (an attribute of kernels; torch.compile cannot trace an import)
from ..base import Params
from ..gru.triton import GRURunner
from ..lstm.triton import LSTMRunner
from .spec import KAFLSTMCell

if TYPE_CHECKING:
    from ...backends.triton import TritonBackend


def runners(backend: "TritonBackend"):
    lstm, gru = KAFLSTMRunner(backend), KAFGRURunner(backend)
    return lambda cell: lstm if type(cell) is KAFLSTMCell else gru


class KAFOperands:
    """The runners' gate hooks for KAF gates."""

    def gate_operands(self, cell, p: Params, sdtype: torch.dtype) -> list[Tensor]:
        """[alpha, dictionary, γ] (γ as a tensor in the state dtype, exact for float64)."""
        alpha = p["kaf_alpha"]
        return [alpha.contiguous(), p["kaf_dict"].contiguous(),
                torch.full((1,), cell.gamma, dtype=sdtype, device=alpha.device)]

    def gate_grads(self, p: Params, operands: list[Tensor], act: Tensor, dkaf: Tensor, hidden: int,
                   skip: int) -> dict[str, Tensor | None]:
        """``kaf_alpha``'s gradient over a chunk (:func:`revrnn.kernels.kaf.alpha_grad`) from the
        operands, the kept activations and the kernels' ``∂L/∂KAF``."""
        alpha, dictionary, gamma = operands
        if not p["kaf_alpha"].requires_grad:
            return {"kaf_alpha": None}
        return {"kaf_alpha": kernels.kaf.alpha_grad(act, dkaf, dictionary, gamma, hidden, skip).to(alpha.dtype)}


class KAFLSTMRunner(KAFOperands, LSTMRunner):
    pass


class KAFGRURunner(KAFOperands, GRURunner):
    pass
