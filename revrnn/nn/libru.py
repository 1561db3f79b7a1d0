"""``revrnn.nn.LiBRU``: the light Bayesian recurrent unit."""
from __future__ import annotations

from typing import Any

import torch

from ..cells.light import LiBRUCell, check_form
from .base import RecurrentBase


class LiBRU(RecurrentBase):
    r"""Multi-layer light Bayesian recurrent unit (Bittar & Garner 2021), torch.nn-style.

    With ``[a_c, a_z] = BN(W x) + V g(h)``:

    * ``form="probs"`` (default): ``g = log``, ``h' = σ(a_z) h + (1 − σ(a_z)) σ(a_c)``,
      ``h ∈ (0, 1)``;
    * ``form="logprobs"``: ``g = id``, ``h' = log(σ(a_z) e^h + (1 − σ(a_z)) e^{softplus(a_c)})``,
      computed as a stable weighted log-sum-exp; ``h`` is unbounded.

    Args:
        input_size, hidden_size, num_layers, batch_first, dropout, bidirectional, device,
            dtype: as in :class:`torch.nn.GRU`.
        bias: with ``batch_norm`` the BN shift β; without, a bias of the input projections.
        form: ``"probs"`` or ``"logprobs"`` (not equivalent cells; see
            :class:`revrnn.cells.libru.LiBRUCell` for the equations, the choice of default
            and the parameter layout).
        batch_norm: one BatchNorm (momentum 0.05) shared by both input projections, as in the
            reference code: shared γ, β and running statistics.
        backend, memory, checkpoint_every, checkpoint_slots: see :class:`revrnn.nn.LSTM`.

    As for :class:`revrnn.nn.LiGRU`, each direction of a bidirectional layer has its own
    weights and batch norm (the reference shares them between directions).
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False,
                 form: str = "probs", batch_norm: bool = True, device: Any = None,
                 dtype: torch.dtype | None = None, *, backend: str = "auto", memory: str = "store",
                 checkpoint_every: int | None = None,
                 checkpoint_slots: int | None = None):
        self.form = check_form(form)
        self.batch_norm = batch_norm
        super().__init__(lambda n: LiBRUCell(n, hidden_size, bias, batch_norm, form),
                         input_size, hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         backend=backend, memory=memory, checkpoint_every=checkpoint_every,
                         checkpoint_slots=checkpoint_slots,
                         device=device, dtype=dtype)

    def extra_repr(self) -> str:
        s = super().extra_repr() + f", form={self.form!r}"
        return s + (", batch_norm=False" if not self.batch_norm else "")
