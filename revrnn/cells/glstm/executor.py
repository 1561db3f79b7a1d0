"""Glue of the g-LSTM for the compiled executor (backends ``cpu`` and ``cuda``): the dense path (``glstm`` in
``csrc/include/revrnn/cells.h``), the LSTM update blended by each unit's time gate; the chunk's
gates (K, H) are the step's per-unit operand, and the gradients of ``mu`` and ``sigma`` follow
from theirs (:func:`.spec.time_gate_grads`). And the sparse path
(``csrc/include/revrnn/glstm_sparse.h``), which projects the layer input inside its loop and
computes and keeps open unit-steps only: a run whose unit-steps are sparse enough
(:func:`.sparse.use_sparse` over the whole sequence) takes the layer input
(:meth:`GLSTMExecutor.takes_input`), and each of its chunks runs sparse, or, where that chunk is
too open, dense after projecting it here. Float32 and float64 inputs only (16-bit ones run
dense, and ``glstm_sparse="always"`` raises for them); loading this glue adds its settings to
the backend (:mod:`.sparse`)."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from ...backends.base import weight_grad
from ...backends.compiled import address, bind
from ...backends.executor import Executor
from .sparse import add_settings, open_units, use_sparse
from .spec import GLSTMCell, time_gate_grads

SPARSE_DTYPES = (torch.float32, torch.float64)


class GLSTMExecutor(Executor):
    cell = "glstm"

    def __init__(self, backend) -> None:
        super().__init__()
        self.backend = backend

    def unit(self, cell, p, chunk, dtype):
        t = torch.arange(chunk.t0, chunk.t0 + chunk.xp.shape[0], device=chunk.xp.device)
        return cell.time_gate(p, t).to(dtype)

    def unit_grads(self, cell, p, chunk, unit, dunit):
        return time_gate_grads(p, chunk.t0, unit, dunit)

    def takes_input(self, cell, p, x, t0):
        """The sparse path's runs: float32 or float64 input, no autocast, and the sequence's
        unit-steps sparse enough for the backend's ``glstm_sparse`` setting."""
        if (self.backend.glstm_sparse == "never" or x.dtype not in SPARSE_DTYPES or not x.shape[2]
                or torch.is_autocast_enabled(x.device.type)):
            return False
        with torch.no_grad():
            return use_sparse(self.backend, cell.time_gate(p, torch.arange(t0, t0 + x.shape[0], device=x.device)))

    @torch.no_grad()
    def forward(self, cell, p, extras, chunk, state, keep):
        if chunk.is_input:
            return self.forward_input(cell, p, extras, chunk, state, keep)
        if self.backend.glstm_sparse == "always" and chunk.xp.dtype not in SPARSE_DTYPES:
            raise ValueError(f"backend {self.backend.name!r} runs the g-LSTM's sparse path on float32 and "
                             f"float64 inputs only, got {chunk.xp.dtype}; set glstm_sparse='auto' or 'never'")
        return super().forward(cell, p, extras, chunk, state, keep)

    def forward_input(self, cell, p, extras, chunk, state, keep):
        """A chunk of the layer input (K, B, I): sparse, or dense after projecting it here.
        Residuals: the path's, then the chunk's input (backward reads it for d W_ih)."""
        x = chunk.xp.contiguous()
        K, B, I = x.shape
        H, dtype = cell.hidden_size, x.dtype
        tg, check = bind(x.device)
        k = self.checked_unit(check, cell, p, chunk, K, dtype)
        if not use_sparse(self.backend, k):
            xp = cell.project(p, x, chunk.mask, True)  # the LSTM's: reads neither mask nor mode
            y, end, res = super().forward(cell, p, extras, replace(chunk, xp=xp, is_input=False), state, keep)
            return y, end, ((*res, x) if keep else None)
        check("x", x, (K, B, I), dtype)
        w_ih, w, bias = self.weights(check, cell, p, I, dtype, with_bias=True)
        counts, units = open_units(k)
        gate = k[k > 0]  # of the open unit-steps, step by step: the order of units
        work = self.backend.sparse_work
        work.open += sum(counts)
        work.total += K * H
        offsets = torch.tensor([0, *counts], dtype=torch.int64).cumsum(0)  # host memory: the loop reads it
        N, n = int(offsets[-1]), max(1, max(counts, default=0))
        h, c = (s.to(dtype, memory_format=torch.contiguous_format, copy=True) for s in state)
        for i, s in enumerate((h, c)):
            check(f"state[{i}]", s, (B, H), dtype)
        mask, mask_ptr = tg.mask(chunk, K, B, x.device)
        act, prev, y = x.new_empty(N, B, 4), x.new_empty(N, B, 2), x.new_empty(K, B, H)
        units = units.contiguous()
        # scratch, alive through the call: the gathered rows of W_ih and W_hh, and the GEMMs' output
        scratch = [x.new_empty(4 * n, I), x.new_empty(4 * n, H), x.new_empty(B, 4 * n)]
        if B and H:
            tg.module.glstm_sparse_forward(tg.flag("x", dtype), tg.where(x.device), K, B, H, I, [
                x.data_ptr(), w_ih.data_ptr(), address(bias), w.data_ptr(), mask_ptr, address(gate if N else None),
                offsets.data_ptr(), address(units if N else None), h.data_ptr(), c.data_ptr(),
                address(act if N else None), address(prev if N else None), y.data_ptr(),
                0, 0, 0, 0, 0, 0, 0, *(t.data_ptr() for t in scratch), 0, 0])
        end = (h.clone(), c.clone())
        # kept: nothing for closed unit-steps (the end state, and per open one its state and gates)
        return y, end, ((h, c, offsets, units, act, prev, x) if keep else None)

    def weights(self, check, cell, p, I, dtype, with_bias: bool = False):
        """``weight_ih``, ``weight_hh`` and, ``with_bias``, the projection's bias (None without
        one), checked."""
        H = cell.hidden_size
        w_ih, w = p["weight_ih"].contiguous(), p["weight_hh"].contiguous()
        check("weight_ih", w_ih, (4 * H, I), dtype)
        check("weight_hh", w, (4 * H, H), dtype)
        bias = (p["bias_ih"] + p["bias_hh"]).contiguous() if with_bias and cell.bias else None
        if bias is not None:
            check("bias", bias, (4 * H,), dtype)
        return w_ih, w, bias

    @torch.no_grad()
    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        if not chunk.is_input:
            return super().backward(cell, p, extras, chunk, residuals, grad_out, grad_state)
        *inner, x = residuals
        K, B, H = grad_out.shape
        if len(inner) != 6:  # kept by the dense path: (act, *states); its xp is not read
            xp = x.new_zeros(()).expand(K, B, 4 * H)
            dxp, dstate, grads = super().backward(cell, p, extras, replace(chunk, xp=xp, is_input=False),
                                                  tuple(inner), grad_out, grad_state)
            dx = (dxp.reshape(K * B, 4 * H) @ p["weight_ih"]).view(K, B, -1)
            dw_ih = weight_grad(dxp, x, x.dtype) if p["weight_ih"].requires_grad else None
            biases = self.bias_names(cell, p)
            db = dxp.sum((0, 1)) if biases else None
            return dx, dstate, {**grads, "weight_ih": dw_ih, **self.bias_grads(biases, db)}
        h_end, c_end, offsets, units, act, prev = inner
        I, dtype = x.shape[2], h_end.dtype
        tg, check = bind(h_end.device)
        k = self.checked_unit(check, cell, p, chunk, K, dtype)
        w_ih, w, _ = self.weights(check, cell, p, I, dtype)
        grad_y = grad_out.contiguous()
        check("grad_out", grad_y, (K, B, H), dtype)
        N = int(offsets[-1])
        check("act", act, (N, B, 4), dtype)
        check("prev", prev, (N, B, 2), dtype)
        n = max(1, int((offsets[1:] - offsets[:-1]).max())) if K else 1
        gate = k[k > 0]
        h, c = h_end.clone(), c_end.clone()
        dh, dc = (g.to(dtype, memory_format=torch.contiguous_format, copy=True) for g in grad_state)
        dx, dgate = grad_y.new_empty(K, B, I), grad_y.new_empty(K, H)
        dw_ih = torch.zeros_like(w_ih) if p["weight_ih"].requires_grad else None
        dw = torch.zeros_like(w) if p["weight_hh"].requires_grad else None
        biases = self.bias_names(cell, p)
        dbias = grad_y.new_zeros(4 * H) if biases else None
        mask, mask_ptr = tg.mask(chunk, K, B, h_end.device)
        # the gathered rows of W_ih and W_hh, d rec, each step's rows of d W_ih or d W_hh, and dk
        # (each row's part of d k, summed in row order, then its d h and d c)
        scratch = [grad_y.new_empty(4 * n, I), grad_y.new_empty(4 * n, H), grad_y.new_empty(B, 4 * n),
                   grad_y.new_empty(4 * n, I + H), grad_y.new_empty(B, 3 * n)]
        if B and H:
            tg.module.glstm_sparse_backward(tg.flag("grad_out", dtype), tg.where(h_end.device), K, B, H, I, [
                x.data_ptr(), w_ih.data_ptr(), 0, w.data_ptr(), mask_ptr, address(gate if N else None),
                offsets.data_ptr(), address(units if N else None), h.data_ptr(), c.data_ptr(),
                address(act if N else None), address(prev if N else None), grad_y.data_ptr(), dh.data_ptr(),
                dc.data_ptr(), dx.data_ptr(), address(dw_ih), address(dbias), address(dw), dgate.data_ptr(),
                *(t.data_ptr() for t in scratch)])
        else:  # no rows: nothing flows
            dx.zero_()
            dgate.zero_()
        return dx, (dh, dc), {"weight_hh": dw, "weight_ih": dw_ih, **self.bias_grads(biases, dbias),
                              **self.unit_grads(cell, p, chunk, k, dgate)}

    @staticmethod
    def bias_names(cell, p) -> list[str]:
        """The biases that take a gradient: each gets the projection's bias's (their sum's)."""
        return [k for k in ("bias_ih", "bias_hh") if cell.bias and p[k].requires_grad]

    @staticmethod
    def bias_grads(names: list[str], db: Tensor | None) -> dict[str, Tensor | None]:
        return {k: db if i == 0 else db.clone() for i, k in enumerate(names)}  # each its own tensor


def runners(backend):
    add_settings(backend)
    runner = GLSTMExecutor(backend)
    return lambda cell: runner if type(cell) is GLSTMCell else None
