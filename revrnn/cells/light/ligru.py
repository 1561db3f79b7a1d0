"""Light GRU (Ravanelli, Brakel, Omologo & Bengio 2018, arXiv 1803.10225), and the layout it
shares with LiBRU: two batch-normalised input projections and a fused (2H, H) recurrent matrix.

Reference code: pytorch-kaldi ``neural_networks.py`` (``liGRU``, ``liGRU_layer``).
"""
from __future__ import annotations

import numbers
from typing import Callable

import torch
from torch import Tensor

from ..base import CellSpec, ParamSpec, Params, State, flat_linear, linear

#: BatchNorm momentum of pytorch-kaldi's liGRU and of the official LiBRU.
BN_MOMENTUM = 0.05
#: torch.nn.BatchNorm1d's default epsilon (the reference codes use it).
BN_EPS = 1e-5


def masked_batch_norm(y: Tensor, mask: Tensor | None, weight: Tensor, bias: Tensor | None,
                      running_mean: Tensor, running_var: Tensor, training: bool,
                      momentum: float = BN_MOMENTUM, eps: float = BN_EPS) -> Tensor:
    """Batch norm of the features of ``y`` (T, B, F) whose T·B rows are the batch, with
    torch.nn.BatchNorm1d's semantics.

    Training: the statistics are those of the valid rows only (``mask`` (T, B), true on valid
    steps; all rows when ``None``), normalised with the biased variance; the running statistics
    are updated in place with the unbiased one, ``r ← (1 − momentum) r + momentum · stat``.
    Eval: every row is normalised with the running statistics. Padded rows are normalised too;
    the engine ignores them.
    """
    if training:
        rows = y.reshape(-1, y.shape[-1]) if mask is None else y[mask]
        n = rows.shape[0]
        if n < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got {n} valid "
                             f"step(s) of {y.shape[-1]} features")
        mean = rows.mean(0)
        var = (rows - mean).square().mean(0)
        with torch.no_grad():
            running_mean.lerp_(mean.detach(), momentum)
            running_var.lerp_(var.detach() * (n / (n - 1)), momentum)
    else:
        mean, var = running_mean, running_var
    out = (y - mean) * torch.rsqrt(var + eps) * weight
    return out if bias is None else out + bias


def _orthogonal_blocks(w: Tensor, blocks: int) -> None:
    """Each row block of ``w`` orthogonal (drawn in at least float32: QR has no half kernels)."""
    for block in w.chunk(blocks, dim=0):
        q = torch.empty(block.shape, dtype=torch.promote_types(w.dtype, torch.float32), device=w.device)
        block.copy_(torch.nn.init.orthogonal_(q))


class LightCell(CellSpec):
    """Layout shared by LiGRU and LiBRU (rows ordered candidate, gate, as in both reference codes).

    Parameters: ``weight_ih`` (2H, I), ``weight_hh`` (2H, H). With ``batch_norm=True`` the input
    projection has no bias (BN's shift is the bias) and the cell owns one BatchNorm of
    ``bn_features`` features: ``bn_weight``, ``bn_bias`` (γ, β; ``bn_bias`` only when
    ``bias=True``) and the buffers ``bn_running_mean``, ``bn_running_var``. Without batch norm,
    ``bias=True`` adds ``bias_ih`` (2H). There is never a recurrent bias.

    Init: ``weight_ih`` with :attr:`init_ih` per (H, I) block, each (H, H) block of
    ``weight_hh`` orthogonal, biases 0, γ = 1, running mean 0 and variance 1.

    With batch norm the projection uses batch statistics, so it is not row-wise and the engine
    keeps it for ``memory="recompute"`` instead of re-projecting chunks (which would also
    update the running statistics twice).
    """

    #: number of row blocks of the projection normalised by the one BatchNorm, one after the
    #: other with shared parameters and running statistics (1: one BN over all 2H features)
    bn_groups: int = 1
    init_ih: Callable[[Tensor], Tensor] = staticmethod(torch.nn.init.xavier_normal_)

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_norm: bool = True):
        super().__init__(input_size, hidden_size)
        if not isinstance(batch_norm, bool):
            raise TypeError(f"batch_norm should be of type bool, got: {type(batch_norm).__name__}")
        self.bias = bias
        self.batch_norm = batch_norm
        self.rowwise_projection = not batch_norm

    @property
    def bn_features(self) -> int:
        return 2 * self.hidden_size // self.bn_groups

    def param_specs(self) -> list[ParamSpec]:
        H, I, n = self.hidden_size, self.input_size, self.bn_features
        specs = [ParamSpec("weight_ih", (2 * H, I), recurrent=False),
                 ParamSpec("weight_hh", (2 * H, H))]
        if self.batch_norm:
            specs.append(ParamSpec("bn_weight", (n,), recurrent=False))
            if self.bias:
                specs.append(ParamSpec("bn_bias", (n,), recurrent=False))
            specs += [ParamSpec("bn_running_mean", (n,), trainable=False, recurrent=False),
                      ParamSpec("bn_running_var", (n,), trainable=False, recurrent=False)]
        elif self.bias:
            specs.append(ParamSpec("bias_ih", (2 * H,), recurrent=False))
        return specs

    def reset_parameters(self, p: Params) -> None:
        for block in p["weight_ih"].chunk(2, dim=0):
            self.init_ih(block)
        _orthogonal_blocks(p["weight_hh"], 2)
        for name in ("bias_ih", "bn_bias", "bn_running_mean"):
            if name in p:
                p[name].zero_()
        for name in ("bn_weight", "bn_running_var"):
            if name in p:
                p[name].fill_(1)

    def project(self, p: Params, x: Tensor, mask: Tensor | None, training: bool) -> Tensor:
        y = flat_linear(x, p["weight_ih"], p.get("bias_ih"))
        if not self.batch_norm:
            return y
        stats = (p["bn_weight"], p.get("bn_bias"), p["bn_running_mean"], p["bn_running_var"])
        blocks = y.chunk(self.bn_groups, dim=-1)
        return torch.cat([masked_batch_norm(b, mask, *stats, training) for b in blocks], dim=-1)


def check_recurrent_dropout(p: float) -> float:
    if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p < 1:
        raise ValueError(f"recurrent_dropout must be a number in [0, 1), got {p!r}")
    return float(p)


class LiGRUCell(LightCell):
    """Light GRU (keep-gate orientation, as in the paper and pytorch-kaldi)::

        [a_h, a_z] = BN(W x)                  time-parallel; BN over the T·B valid rows
        z  = σ(a_z + U_z h)
        n  = ReLU(a_h + U_h h) ⊙ m            m: recurrent-dropout mask, fixed over time
        h' = z ⊙ h + (1 − z) ⊙ n

    No reset gate, one fused (2H, H) recurrent GEMM per step. ``h ≥ 0`` whenever ``h₀ ≥ 0``
    (a convex combination of non-negative terms) but it is unbounded: clip gradients.

    Batch norm: one BN over the 2H concatenated features, equivalent to pytorch-kaldi's two
    BNs of H (γ, β and running statistics are per feature); momentum 0.05.

    Recurrent dropout (``recurrent_dropout=p``): one Bernoulli(1 − p) mask per sequence and
    unit, drawn once per forward in :meth:`extras` and applied at every step. It is
    **inverted** dropout — the kept units are scaled by 1/(1 − p) in training and the cell is
    the identity in eval — whereas pytorch-kaldi keeps unscaled masks in training and
    multiplies ``n`` by (1 − p) at test time. Both keep the training-time expectation of
    ``n ⊙ m`` equal to the eval-time candidate; they differ by the factor (1 − p) on ``n``, so
    weights trained under one convention must be evaluated under the same one.

    Init: ``weight_ih`` Xavier-normal (as ``liGRU_layer``), ``weight_hh`` orthogonal blocks.
    """

    name = "ligru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, batch_norm: bool = True,
                 recurrent_dropout: float = 0.0):
        super().__init__(input_size, hidden_size, bias, batch_norm)
        self.recurrent_dropout = check_recurrent_dropout(recurrent_dropout)

    def extras(self, p: Params, batch: int, like: Tensor, training: bool) -> Params:
        q = self.recurrent_dropout
        if not training or q == 0:
            return {}
        keep = like.new_full((batch, self.hidden_size), 1 - q)
        return {"drop_mask": torch.bernoulli(keep) / (1 - q)}

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        (h,) = state
        a_h, a_z = (xp + linear(h, p["weight_hh"])).chunk(2, dim=1)
        n = torch.relu(a_h)
        if "drop_mask" in extras:
            n = n * extras["drop_mask"]
        z = torch.sigmoid(a_z)
        return (z * h + (1 - z) * n,)  # not n + z (h - n), which loses h ≪ n when z rounds to 1
