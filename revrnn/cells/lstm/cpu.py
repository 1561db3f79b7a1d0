"""Glue of the LSTM family for the compiled executor (backend ``cpu``): torch.nn's LSTM without
projection, per step one torch GEMM and one fused C++ pointwise call (``csrc/``).

Residuals of a chunk of K steps: ``(act, hs, cs)`` with the gate activations ``act``
(K, B, 4H) and the states ``hs``, ``cs`` (K+1, B, H) before and after every step.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ...backends.base import Chunk, Runner
from ...backends.cpu import _C as C, check, flag, mask_address
from ..base import CellSpec, Params, State


def runners(backend):
    runner = LSTMExecutor()
    return lambda cell: runner if cell.proj_size == 0 else None


class LSTMExecutor(Runner):
    """The chunk contract through the C++ LSTM step (``lstm_forward``, ``lstm_backward``)."""

    # The steps are not differentiable torch ops (raw pointers); the engine differentiates the
    # chunk through backward_chunk, so no graph is ever wanted here, whatever the grad mode.
    @torch.no_grad()
    def forward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                state: State, keep: bool) -> tuple[Tensor, State, tuple[Tensor, ...] | None]:
        xp, w_t = chunk.xp, p["weight_hh"].t()
        K, B, G = xp.shape
        H, dtype = G // 4, xp.dtype
        dt = flag("xp", dtype)
        for name, s in zip(("h0", "c0"), state):
            check(name, s, (B, H), dtype, contiguous=False)  # copied below: any layout will do
        mask, mask_ptr = mask_address(chunk, K, B)  # mask_ptr 0: no mask, hence `mask_ptr and ...` below
        # Backward needs every step's activations and states; without `keep` two rows of
        # states used alternately and one row of gates are enough.
        rows = K + 1 if keep else 2
        hs, cs = xp.new_empty(rows, B, H), xp.new_empty(rows, B, H)
        act, y = xp.new_empty(K if keep else 1, B, G), xp.new_empty(K, B, H)
        hs[0], cs[0] = state
        n, ng = B * H * xp.element_size(), B * G * xp.element_size()  # bytes per step
        hp, cp, ap, yp = hs.data_ptr(), cs.data_ptr(), act.data_ptr(), y.data_ptr()
        for i in range(K):
            r, w, a = (i, i + 1, i) if keep else (i % 2, (i + 1) % 2, 0)
            torch.addmm(xp[i], hs[r], w_t, out=act[a])  # pre-activations; C++ turns them into activations
            C.lstm_forward(dt, B, H, ap + a * ng, hp + r * n, cp + r * n,
                            mask_ptr and mask_ptr + i * B, hp + w * n, cp + w * n, yp + i * n)
        last = K if keep else K % 2
        # Clones: the end state is returned to the caller and must not alias the residuals.
        end = (hs[last].clone(), cs[last].clone())
        return y, end, ((act, hs, cs) if keep else None)

    @torch.no_grad()
    def backward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                 residuals: tuple[Tensor, ...], grad_out: Tensor, grad_state: State
                 ) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        act, hs, cs = residuals
        weight = p["weight_hh"]
        K, B, G = act.shape
        H, dtype = G // 4, act.dtype
        dt = flag("act", dtype)
        check("act", act, (K, B, G), dtype)
        check("hs", hs, (K + 1, B, H), dtype)
        check("cs", cs, (K + 1, B, H), dtype)
        grad_y = grad_out.contiguous()
        check("grad_out", grad_y, (K, B, H), dtype)
        # Updated in place step by step, so always fresh buffers.
        dh, dc = (g.clone(memory_format=torch.contiguous_format) for g in grad_state)
        check("grad_state[0]", dh, (B, H), dtype)
        check("grad_state[1]", dc, (B, H), dtype)
        mask, mask_ptr = mask_address(chunk, K, B)
        dgates = act.new_empty(K, B, G)
        n, ng = B * H * act.element_size(), B * G * act.element_size()
        ap, cp, gyp, dgp = act.data_ptr(), cs.data_ptr(), grad_y.data_ptr(), dgates.data_ptr()
        dhp, dcp = dh.data_ptr(), dc.data_ptr()
        for i in range(K - 1, -1, -1):
            C.lstm_backward(dt, B, H, ap + i * ng, cp + i * n, cp + (i + 1) * n, gyp + i * n,
                             mask_ptr and mask_ptr + i * B, dhp, dcp, dgp + i * ng)
            dh.addmm_(dgates[i], weight)  # the recurrent part of dh_{t-1}
        # The weight gradient of the whole chunk as one GEMM: (4H, K·B) @ (K·B, H).
        grad_w = (dgates.view(K * B, G).t() @ hs[:K].view(K * B, H)) if weight.requires_grad else None
        # gates = xp + h W_hh^T, so d(xp) is d(gates).
        return dgates, (dh, dc), {"weight_hh": grad_w}
