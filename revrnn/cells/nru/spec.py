r"""NRU — the Non-saturating Recurrent Unit (Chandar et al., AAAI 2019), as in the official code.

This is ``NRUCell`` of ``apsarath/NRU`` (``nru_project/NRU.py``, identical to myTorch's
``FlatMemoryCell``), not the paper's equations; the differences are listed in
``specs/cells.md`` §5.2. With ``r = sqrt(k·M)`` (k heads, memory size M), ``φ`` = ReLU if
``use_relu`` else the identity:

.. code-block:: text

    h_t = ReLU( W_x x_t + W_hm [h_{t-1}; m_{t-1}] + b )          # the official Linear(I+H+M → H)
    u_t = [h_t; m_{t-1}]                                           # the heads do not see x_t
    α_t = φ(W_α u_t + b_α),  β_t = φ(W_β u_t + b_β)                # (k,) each
    (p, q) = W_vα u_t + b_vα;  V_α = φ(reshape(p qᵀ, (k, M)))      # one rank-1 product, k heads
    V_α[j] ← V_α[j] / max(‖V_α[j]‖_5, 1e-12)                       # L5 norm per head, over M
    (same for β with W_vβ, b_vβ)
    m_t = m_{t-1} + mean_j( α_{t,j} V_α[j] − β_{t,j} V_β[j] )     # mean over heads, not sum

**Split of the official input Linear.** The official ``hmi2h = Linear(I+H+M, H)`` acts on
``[x_t; h_{t-1}; m_{t-1}]``. Its weight is stored as two blocks, ``weight_ih = W[:, :I]`` and
``weight_hh = W[:, I:]``, and its bias as ``bias_ih``. Since ``W [x; h; m] + b = (W_x x + b) +
W_hm [h; m]``, the first term depends on ``x`` only: :meth:`NRUCell.project` computes it for all
steps as one (T·B)×I GEMM, and the step adds ``W_hm [h; m]``. This is the same function
(``hmi2h.weight = cat(weight_ih, weight_hh, dim=1)``, ``hmi2h.bias = bias_ih``; the tests check
it against the unsplit Linear).

**Parameters** (row order documented so that kernels and checkpoints agree):

* ``weight_ih`` (H, I), ``bias_ih`` (H) — the x-block of ``hmi2h`` and its bias (projection only);
* ``weight_hh`` (H, H + M) — the [h; m] block of ``hmi2h``;
* ``weight_heads`` (2k + 4r, H + M), ``bias_heads`` (2k + 4r) — the four official head Linears
  stacked so that each step runs one GEMM on ``u_t``; rows are ``α`` (k, ``hm2alpha``), ``β`` (k,
  ``hm2beta``), ``p_α, q_α`` (r + r, ``hm2v_alpha``), ``p_β, q_β`` (r + r, ``hm2v_beta``).

``bias=False`` drops ``bias_ih`` and ``bias_heads`` (the official cell always has them).

**Init**: PyTorch's default ``nn.Linear`` init of the official layers, ``U(±1/sqrt(fan_in))`` for
weights and biases, where fan_in is that of the *unsplit* layer: ``I + H + M`` for ``weight_ih``,
``weight_hh`` and ``bias_ih``; ``H + M`` for the heads.

**Numerics** (spec §5.3). The memory has no decay and its update is degree-1 homogeneous in
(h, m), so at the default init ‖m‖ grows geometrically with t (≈1e11–1e20 after 785 steps).
Three measures:

* the state (h, m) is carried in float32 when the input is float16/bfloat16
  (:meth:`NRUCell.state_dtype`; the step computes in the state's dtype, so the module's output,
  ``h``, is float32 too); float32 and float64 are kept as they are;
* the L5 normalisation is computed without overflow: ``p`` and ``q`` are divided by their
  max-abs before the outer product, each head by its own max-abs before the fifth powers, and
  the official ``max(‖v‖_5, 1e-12)`` is applied to the rescaled norm — the same value as the
  official formula wherever that is finite (see :func:`l5_heads`);
* ``memory_clamp=c`` (optional, off by default, not in the official code) clamps every memory
  slot to ``[-c, c]`` after each update; clamped slots get zero gradient.

Backward needs per step only ``h_{t-1}``, ``m_{t-1}`` and the projected input; the update is not
invertible, so ``memory="recompute"`` is the memory-saving strategy.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ..base import CellSpec, ParamSpec, Params, State, check_number, check_positive, flat_linear, linear

#: ``eps`` of the official ``F.normalize(v, p=5, dim=2, eps=1e-12)``.
L5_EPS = 1e-12


def check_heads(memory_size: int, num_heads: int) -> int:
    """``r = sqrt(num_heads · memory_size)``; raises unless it is an integer."""
    check_positive(memory_size=memory_size, num_heads=num_heads)
    r = math.isqrt(num_heads * memory_size)
    if r * r != num_heads * memory_size:
        raise ValueError("sqrt(num_heads * memory_size) must be an integer, got num_heads="
                         f"{num_heads}, memory_size={memory_size} (product {num_heads * memory_size})")
    return r


def _unit_max(v: Tensor) -> tuple[Tensor, Tensor]:
    """``v / s`` and ``s = max|v|`` over the last dim (``s`` detached, at least the smallest normal)."""
    s = v.detach().abs().amax(-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return v / s, s


def l5_heads(p: Tensor, q: Tensor, heads: int, relu: bool) -> Tensor:
    r"""The official write/erase vectors, ``normalize(φ(reshape(p qᵀ, (k, M))), p=5, eps=1e-12)``.

    ``p``, ``q`` (B, r) -> (B, k, M). Overflow-safe: with ``p = s_p p̂``, ``q = s_q q̂`` and, per
    head, ``φ(p̂ q̂ᵀ) = a w`` (``s_p, s_q, a`` the max-abs values, so ``max|w| = 1`` and
    ``1 ≤ ‖w‖_5 ≤ M^{1/5}``), φ being positively homogeneous gives

    ``V / max(‖V‖_5, ε) = w / max(‖w‖_5, ε / (s_p s_q a))``

    exactly. The scales are detached: the right-hand side is then still exactly the gradient
    of the left-hand side (``V/‖V‖`` is scale-invariant, and ``V/ε = w·(s_p s_q a)/ε``).
    """
    p, sp = _unit_max(p)
    q, sq = _unit_max(q)
    v = (p[:, :, None] * q[:, None, :]).reshape(p.shape[0], heads, p.shape[1] * q.shape[1] // heads)
    if relu:
        v = torch.relu(v)
    w, a = _unit_max(v)
    # ε / (s_p s_q a), divided in turn so that it rounds to 0 or inf only when the result does
    floor = L5_EPS / sp[:, :, None] / sq[:, :, None] / a
    norm = torch.linalg.vector_norm(w, ord=5, dim=-1, keepdim=True)
    denom = torch.maximum(norm, floor).clamp_min(torch.finfo(w.dtype).tiny)
    return w / denom


class NRUCell(CellSpec):
    """The official NRU cell; see the module docstring for equations, parameters and init.

    State ``(h, m)`` of sizes (H, M); ``h`` is the output.
    """

    name = "nru"

    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, memory_size: int = 64,
                 num_heads: int = 4, use_relu: bool = False, memory_clamp: float | None = None):
        super().__init__(input_size, hidden_size)
        self.r = check_heads(memory_size, num_heads)
        if memory_clamp is not None:
            memory_clamp = check_number("memory_clamp", memory_clamp)
        self.bias, self.memory_size, self.num_heads = bias, memory_size, num_heads
        self.use_relu, self.memory_clamp = use_relu, memory_clamp

    @property
    def state_sizes(self) -> tuple[int, ...]:
        return (self.hidden_size, self.memory_size)

    def state_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """float32 for float16/bfloat16 input (the memory is unbounded); otherwise ``dtype``."""
        return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype

    @property
    def head_rows(self) -> int:
        return 2 * self.num_heads + 4 * self.r

    def param_specs(self) -> list[ParamSpec]:
        H, I, HM = self.hidden_size, self.input_size, self.hidden_size + self.memory_size
        specs = [ParamSpec("weight_ih", (H, I), recurrent=False), ParamSpec("weight_hh", (H, HM)),
                 ParamSpec("weight_heads", (self.head_rows, HM))]
        if self.bias:
            specs += [ParamSpec("bias_ih", (H,), recurrent=False), ParamSpec("bias_heads", (self.head_rows,))]
        return specs

    def reset_parameters(self, p: Params) -> None:
        """nn.Linear's default over the unsplit official layers: ``U(±1/sqrt(fan_in))``."""
        heads = self.hidden_size + self.memory_size  # the four head Linears
        hmi2h = self.input_size + heads  # weight_ih, weight_hh, bias_ih
        for name, tensor in p.items():
            bound = 1.0 / math.sqrt(heads if name.endswith("_heads") else hmi2h)
            torch.nn.init.uniform_(tensor, -bound, bound)

    def project(self, p: Params, x: Tensor, mask: Tensor | None, training: bool) -> Tensor:
        """``W_x x_t + b`` for all steps. Layers above the first get float32 input from a
        low-precision stack (the state dtype); the GEMM runs in the promoted dtype."""
        w = p["weight_ih"]
        dtype = torch.promote_types(x.dtype, w.dtype)
        b = p["bias_ih"].to(dtype) if self.bias else None
        return flat_linear(x.to(dtype), w.to(dtype), b)

    def step(self, p: Params, xp: Tensor, state: State, t: int, extras: Params) -> State:
        """One official step (``t`` unused), computed in the state's dtype."""
        h, m = state
        dt = h.dtype
        h = torch.relu(xp.to(dt) + linear(torch.cat((h, m), 1), p["weight_hh"].to(dt)))
        k, r = self.num_heads, self.r
        heads = linear(torch.cat((h, m), 1), p["weight_heads"].to(dt),
                       p["bias_heads"].to(dt) if self.bias else None)
        alpha, beta, p_a, q_a, p_b, q_b = heads.split([k, k, r, r, r, r], dim=1)
        if self.use_relu:
            alpha, beta = torch.relu(alpha), torch.relu(beta)
        v_a = l5_heads(p_a, q_a, k, self.use_relu)
        v_b = l5_heads(p_b, q_b, k, self.use_relu)
        m = m + (alpha[:, :, None] * v_a - beta[:, :, None] * v_b).mean(1)
        if self.memory_clamp is not None:
            m = m.clamp(-self.memory_clamp, self.memory_clamp)
        return h, m
