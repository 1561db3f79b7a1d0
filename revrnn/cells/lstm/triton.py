"""Triton glue of the LSTM family: the LSTM runner, which the g-LSTM and KAF-LSTM families
extend through its hooks (:meth:`LSTMRunner.time_gate`, :meth:`LSTMRunner.gate_operands`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...backends.base import Chunk, Runner
from ...backends.base import weight_grad
from ...backends.triton.runner import ChunkBuffers, SigmoidGates, chunk_mask, common, grad_buffers, kernels
from ...kernels import lstm, persistent  # noqa: F401 (attributes of kernels; torch.compile cannot trace an import)
from ..base import CellSpec, Params
from .spec import LSTMCell

if TYPE_CHECKING:
    from ...backends.triton import TritonBackend


def runners(backend: "TritonBackend"):
    runner = LSTMRunner(backend)
    return lambda cell: runner


class LSTMRunner(SigmoidGates, Runner):
    """torch.nn.LSTM (with or without projection), and through its hooks the KAF-gated LSTM
    and the dense g-LSTM (every unit computed, closed units passed through by the kernel).

    Residuals: the activations (K, B, 4H) in the input dtype (the i, f, o pre-activations instead
    of the gates with KAF gates) and the float states h (K + 1, B, P) and c (K + 1, B, H).
    Projecting, the kernel yields ``o ⊙ tanh(c)`` and a GEMM per step projects it; backward gets
    that output back from its kernel and computes ``W_hr``'s gradient as one GEMM per chunk.
    """

    def __init__(self, backend: "TritonBackend") -> None:
        self.backend = backend

    def persistent(self, cell: CellSpec, like: Tensor) -> bool:
        """Whether :mod:`revrnn.kernels.persistent` runs the chunk: torch.nn's LSTM without
        projection, H ≤ 128, when the backend's setting asks for it. Never the float32 LSTM on
        CUDA: Triton 3.9 aborts compiling its backward for sm_90 (an LLVM SLP-vectorizer
        assertion; tests/test_gpu_compile.py tracks it)."""
        return (type(cell) is LSTMCell and cell.proj_size == 0 and like.dtype in kernels.persistent.DTYPES
                and not (like.is_cuda and like.dtype == torch.float32)
                and kernels.persistent.supported(cell.hidden_size) and self.backend.wants_persistent(like))

    # -- hooks of the families built on this runner --------------------------------------------
    def time_gate(self, cell: CellSpec, p: Params, chunk: Chunk, sdtype: torch.dtype) -> Tensor | None:
        """Per-step gates of the units (K, H) that close them (the g-LSTM); None: always open."""
        return None

    def time_gate_grads(self, cell: CellSpec, p: Params, chunk: Chunk, k: Tensor, dk: Tensor) -> dict:
        """Parameter gradients from those of :meth:`time_gate`'s gates."""
        return {}

    @staticmethod
    def project(hc: Tensor, w_hr: Tensor, h_prev: Tensor, h_out: Tensor, y: Tensor, mask: Tensor | None) -> None:
        """``h = o ⊙ tanh(c) W_hrᵀ`` into the output ``y`` and, on valid rows, the state ``h_out``
        (masked rows keep ``h_prev`` and output 0)."""
        torch.mm(hc.to(y.dtype), w_hr.t(), out=y)
        if mask is None:
            h_out.copy_(y)
        else:
            valid = mask[:, None].bool()
            torch.where(valid, y.to(h_out.dtype), h_prev, out=h_out)
            y.masked_fill_(~valid, 0)

    def forward(self, cell, p, extras, chunk, state, keep):
        if self.persistent(cell, chunk.xp):
            y, h, c, res = kernels.persistent.lstm_forward(chunk.xp, p["weight_hh"], *state, chunk.mask, keep)
            return y, (h.to(y.dtype), c.to(y.dtype)), res
        run = ChunkBuffers(chunk, state, keep)
        K, B, G = run.xp.shape
        hs, cs = run.states
        w_t, w_hr = p["weight_hh"].t(), p.get("weight_hr")
        k = self.time_gate(cell, p, chunk, run.sdtype)
        gate_fn = self.gate_operands(cell, p, run.sdtype)
        act = run.new(K, B, G, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, hs.shape[-1], dtype=run.dtype), run.new(B, G, dtype=run.dtype)
        hc = None if w_hr is None else run.new(B, G // 4)
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype), w_t, out=rec)
            kernels.lstm.lstm_forward_step(run.xp[i], rec, None if hc is not None else hs[r], cs[r], run.mask_at(i),
                                           None if k is None else k[i], gate_fn, hs[w] if hc is None else hc, cs[w],
                                           y[i] if hc is None else None, None if act is None else act[i])
            if hc is not None:
                self.project(hc, w_hr, hs[r], hs[w], y[i], run.mask_at(i))
        return y, run.end(), ((act, hs, cs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        act, hs, cs = residuals
        K, B, G = act.shape
        H, dtype, sdtype = G // 4, act.dtype, hs.dtype
        w, w_hr = p["weight_hh"], p.get("weight_hr")
        if self.persistent(cell, act):  # the same residual layout as the step kernels'
            gxp, dh, dc, dw = kernels.persistent.lstm_backward(residuals, w, grad_out, *grad_state, chunk.mask,
                                                               w.requires_grad)
            return gxp, (dh.to(dtype), dc.to(dtype)), {"weight_hh": dw}
        k = self.time_gate(cell, p, chunk, sdtype)
        gate_fn = self.gate_operands(cell, p, sdtype)
        mask = chunk_mask(chunk)
        dh, dc = grad_buffers(grad_state, sdtype)
        dgates = common.new((K, B, G), sdtype, act.device)
        dk = None if k is None else torch.empty_like(hs[1:])
        dgate_fn = common.new((K, B, 3 * H), sdtype, act.device) if gate_fn else None
        if w_hr is not None:  # per step: the gradient of the projection's output, and its input
            dproj, hcs, dhc = (common.new(shape, sdtype, act.device) for shape in ((K, *dh.shape), (K, B, H), (B, H)))
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            m = None if mask is None else mask[i]
            if w_hr is None:
                kernels.lstm.lstm_backward_step(act[i], hs[i], cs[i], m, None if k is None else k[i], gate_fn, dy[i],
                                                dh, dc, dgates[i], None if dk is None else dk[i],
                                                None if dgate_fn is None else dgate_fn[i], None)
            else:
                # valid rows send the gradient of their new h through the projection; masked
                # rows pass it to the previous h
                torch.add(dh, dy[i] if m is None else dy[i] * m[:, None], out=dproj[i])
                if m is None:
                    dh.zero_()
                else:
                    valid = m[:, None].bool()
                    dh.copy_(dproj[i].masked_fill(valid, 0))
                    dproj[i].masked_fill_(~valid, 0)
                dhc.copy_(dproj[i].to(dtype) @ w_hr.to(dtype))
                kernels.lstm.lstm_backward_step(act[i], None, cs[i], m, None, gate_fn, None, dhc, dc, dgates[i], None,
                                                None if dgate_fn is None else dgate_fn[i], hcs[i])
            dh += dgates[i].to(dtype) @ w.to(dtype)  # the recurrent part of dh_{t-1}
        grads: dict[str, Tensor | None] = {"weight_hh": weight_grad(dgates, hs[:K], dtype) if w.requires_grad else None}
        if w_hr is not None:
            grads["weight_hr"] = weight_grad(dproj, hcs, dtype) if w_hr.requires_grad else None
        if k is not None:
            grads.update(self.time_gate_grads(cell, p, chunk, k, dk.sum(1)))
        if gate_fn:
            grads.update(self.gate_grads(p, gate_fn, act, dgate_fn, H, skip=2 * H))
        return dgates.to(dtype), (dh.to(dtype), dc.to(dtype)), grads
