"""The compiled CPU backend: per step one torch GEMM and one fused C++ pointwise call.

The C++ core (``csrc/``, module ``revrnn._C``) is framework-free: it takes raw addresses,
sizes and a dtype flag. This module owns everything torch: allocation, the GEMMs, and the
checks that make handing out raw pointers safe (device, dtype, shape, contiguity), done once
per chunk so that the per-step loop is only a GEMM and a C++ call, with no host synchronisation.

Residuals of a chunk of K steps: ``(act, hs, cs)`` with the gate activations ``act``
(K, B, 4H) and the states ``hs``, ``cs`` (K+1, B, H) before and after every step.
"""
from __future__ import annotations

import importlib

import torch
from torch import Tensor

from ..cells.base import CellSpec, Params, State
from ..cells.lstm import LSTMCell
from .base import Backend, Chunk

try:
    _C = importlib.import_module("revrnn._C")
    _REASON = None
except ImportError as err:  # not built (no compiler, REVRNN_NO_EXT=1) or not loadable
    _C, _REASON = None, (f"the compiled extension revrnn._C is not built: {err} "
                         "(see docs/build.md; `pip install -v .` shows why the build was skipped)")


def _flag(name: str, dtype: torch.dtype):
    """The C++ dtype flag for ``dtype``; the error names the tensor."""
    if dtype == torch.float32:
        return _C.DType.float32
    if dtype == torch.float64:
        return _C.DType.float64
    raise TypeError(f"backend 'cpu' supports float32 and float64, got {name} of dtype {dtype}; "
                    "use backend='reference'")


def _check(name: str, t: Tensor, shape: tuple[int, ...], dtype: torch.dtype,
           contiguous: bool = True) -> None:
    """Raise unless ``t`` is what the C++ side will read or write through its address."""
    if t.device.type != "cpu":
        raise ValueError(f"backend 'cpu': {name} must be a CPU tensor, got device {t.device}")
    if t.dtype != dtype:
        raise TypeError(f"backend 'cpu': {name} must have dtype {dtype}, got {t.dtype}")
    if tuple(t.shape) != shape:
        raise ValueError(f"backend 'cpu': {name} must have shape {shape}, got {tuple(t.shape)}")
    if contiguous and not t.is_contiguous():
        raise ValueError(f"backend 'cpu': {name} must be contiguous")


def _mask(chunk: Chunk, K: int, B: int) -> tuple[Tensor | None, int]:
    """The chunk's mask as contiguous bytes (torch.bool is one byte, 0 or 1) and its address
    (0: no mask). Callers hold on to the tensor while the address is in use."""
    if chunk.mask is None:
        return None, 0
    if chunk.mask.dtype != torch.bool:
        raise TypeError(f"backend 'cpu': mask must have dtype torch.bool, got {chunk.mask.dtype}")
    mask = chunk.mask.contiguous()
    _check("mask", mask, (K, B), torch.bool)
    return mask, mask.data_ptr()


class CpuBackend(Backend):
    """torch.nn's LSTM (no projection) on CPU tensors, float32 and float64."""

    name = "cpu"

    def availability(self, device: torch.device) -> str | None:
        if _C is None:
            return _REASON
        if device.type != "cpu":
            return f"it runs on CPU tensors only, got a {device.type} device"
        return None

    def supports(self, cell: CellSpec, dtype: torch.dtype) -> bool:
        return type(cell) is LSTMCell and cell.proj_size == 0 and dtype in (torch.float32, torch.float64)

    # The steps are not differentiable torch ops (raw pointers); the engine differentiates the
    # chunk through backward_chunk, so no graph is ever wanted here, whatever the grad mode.
    @torch.no_grad()
    def forward_chunk(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                      state: State, keep: bool) -> tuple[Tensor, State, tuple[Tensor, ...] | None]:
        xp, w_t = chunk.xp, p["weight_hh"].t()
        K, B, G = xp.shape
        H, dtype = G // 4, xp.dtype
        flag = _flag("xp", dtype)
        for name, s in zip(("h0", "c0"), state):
            _check(name, s, (B, H), dtype, contiguous=False)  # copied below: any layout will do
        mask, mask_ptr = _mask(chunk, K, B)  # mask_ptr 0: no mask, hence `mask_ptr and ...` below
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
            _C.lstm_forward(flag, B, H, ap + a * ng, hp + r * n, cp + r * n,
                            mask_ptr and mask_ptr + i * B, hp + w * n, cp + w * n, yp + i * n)
        last = K if keep else K % 2
        # Clones: the end state is returned to the caller and must not alias the residuals.
        end = (hs[last].clone(), cs[last].clone())
        return y, end, ((act, hs, cs) if keep else None)

    @torch.no_grad()
    def backward_chunk(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                       residuals: tuple[Tensor, ...], grad_out: Tensor, grad_state: State
                       ) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        act, hs, cs = residuals
        weight = p["weight_hh"]
        K, B, G = act.shape
        H, dtype = G // 4, act.dtype
        flag = _flag("act", dtype)
        _check("act", act, (K, B, G), dtype)
        _check("hs", hs, (K + 1, B, H), dtype)
        _check("cs", cs, (K + 1, B, H), dtype)
        grad_y = grad_out.contiguous()
        _check("grad_out", grad_y, (K, B, H), dtype)
        # Updated in place step by step, so always fresh buffers.
        dh, dc = (g.clone(memory_format=torch.contiguous_format) for g in grad_state)
        _check("grad_state[0]", dh, (B, H), dtype)
        _check("grad_state[1]", dc, (B, H), dtype)
        mask, mask_ptr = _mask(chunk, K, B)
        dgates = act.new_empty(K, B, G)
        n, ng = B * H * act.element_size(), B * G * act.element_size()
        ap, cp, gyp, dgp = act.data_ptr(), cs.data_ptr(), grad_y.data_ptr(), dgates.data_ptr()
        dhp, dcp = dh.data_ptr(), dc.data_ptr()
        for i in range(K - 1, -1, -1):
            _C.lstm_backward(flag, B, H, ap + i * ng, cp + i * n, cp + (i + 1) * n, gyp + i * n,
                             mask_ptr and mask_ptr + i * B, dhp, dcp, dgp + i * ng)
            dh.addmm_(dgates[i], weight)  # the recurrent part of dh_{t-1}
        # The weight gradient of the whole chunk as one GEMM: (4H, K·B) @ (K·B, H).
        grad_w = (dgates.view(K * B, G).t() @ hs[:K].view(K * B, H)) if weight.requires_grad else None
        # gates = xp + h W_hh^T, so d(xp) is d(gates).
        return dgates, (dh, dc), {"weight_hh": grad_w}
