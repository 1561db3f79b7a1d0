"""Glue of the g-LSTM for the compiled executor (backends ``cpu`` and ``cuda``): the dense path (``glstm`` in
``csrc/include/revrnn/cells.h``), the LSTM update blended by each unit's time gate; the chunk's
gates (K, H) are the step's per-unit operand, and the gradients of ``mu`` and ``sigma`` follow
from theirs (:func:`.spec.time_gate_grads`). And the sparse path
(``csrc/include/revrnn/glstm_sparse.h``), which computes and keeps open unit-steps only, for
float32 and float64 inputs (16-bit ones run dense, and ``glstm_sparse="always"`` raises for them);
loading this glue adds its settings to the backend (:mod:`.sparse`)."""
from __future__ import annotations

import torch

from ...backends.compiled import address, bind
from ...backends.executor import Executor
from .sparse import add_settings, open_units, use_sparse
from .spec import GLSTMCell, time_gate_grads


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

    @torch.no_grad()
    def forward(self, cell, p, extras, chunk, state, keep):
        xp = chunk.xp.contiguous()
        K, B, _ = xp.shape
        H, dtype = cell.hidden_size, xp.dtype
        if dtype not in (torch.float32, torch.float64):
            if self.backend.glstm_sparse == "always":
                raise ValueError(f"backend {self.backend.name!r} runs the g-LSTM's sparse path on float32 and "
                                 f"float64 inputs only, got {dtype}; set glstm_sparse='auto' or 'never'")
            return super().forward(cell, p, extras, chunk, state, keep)
        tg, check = bind(xp.device)
        k = self.checked_unit(check, cell, p, chunk, K, dtype)
        if not use_sparse(self.backend, k):
            return super().forward(cell, p, extras, chunk, state, keep)
        check("xp", xp, (K, B, 4 * H), dtype)
        w = p["weight_hh"].contiguous()
        check("weight_hh", w, (4 * H, H), dtype)
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
        mask, mask_ptr = tg.mask(chunk, K, B, xp.device)
        act, prev, y = xp.new_empty(N, B, 4), xp.new_empty(N, B, 2), xp.new_empty(K, B, H)
        units = units.contiguous()
        w_open, rec = xp.new_empty(4 * n, H), xp.new_empty(B, 4 * n)  # scratch, alive through the call
        if B and H:
            tg.module.glstm_sparse_forward(tg.flag("xp", dtype), tg.where(xp.device), K, B, H, [
                xp.data_ptr(), w.data_ptr(), mask_ptr, address(gate if N else None), offsets.data_ptr(),
                address(units if N else None),
                h.data_ptr(), c.data_ptr(), address(act if N else None), address(prev if N else None), y.data_ptr(),
                0, 0, 0, 0, 0, w_open.data_ptr(), rec.data_ptr(), 0, 0])
        end = (h.clone(), c.clone())
        # kept: nothing for closed unit-steps (the end state, and per open one its state and gates)
        return y, end, ((h, c, offsets, units, act, prev) if keep else None)

    @torch.no_grad()
    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        if len(residuals) != 6:  # kept by the dense path: (act, *states)
            return super().backward(cell, p, extras, chunk, residuals, grad_out, grad_state)
        h_end, c_end, offsets, units, act, prev = residuals
        K, B, H = grad_out.shape
        dtype = h_end.dtype
        tg, check = bind(h_end.device)
        k = self.checked_unit(check, cell, p, chunk, K, dtype)
        w = p["weight_hh"].contiguous()
        check("weight_hh", w, (4 * H, H), dtype)
        grad_y = grad_out.contiguous()
        check("grad_out", grad_y, (K, B, H), dtype)
        N = int(offsets[-1])
        check("act", act, (N, B, 4), dtype)
        check("prev", prev, (N, B, 2), dtype)
        n = max(1, int((offsets[1:] - offsets[:-1]).max())) if K else 1
        gate = k[k > 0]
        h, c = h_end.clone(), c_end.clone()
        dh, dc = (g.to(dtype, memory_format=torch.contiguous_format, copy=True) for g in grad_state)
        dxp, dgate = grad_y.new_empty(K, B, 4 * H), grad_y.new_empty(K, H)
        dw = torch.zeros_like(w) if p["weight_hh"].requires_grad else None
        mask, mask_ptr = tg.mask(chunk, K, B, h_end.device)
        # w, rec, dw and dk (each row's part of d k, summed in row order, then its d h and d c)
        scratch = [grad_y.new_empty(4 * n, H), grad_y.new_empty(B, 4 * n), grad_y.new_empty(4 * n, H),
                   grad_y.new_empty(B, 3 * n)]
        if B and H:
            tg.module.glstm_sparse_backward(tg.flag("grad_out", dtype), tg.where(h_end.device), K, B, H, [
                0, w.data_ptr(), mask_ptr, address(gate if N else None), offsets.data_ptr(),
                address(units if N else None),
                h.data_ptr(), c.data_ptr(), address(act if N else None), address(prev if N else None),
                grad_y.data_ptr(), dh.data_ptr(), dc.data_ptr(), dxp.data_ptr(), address(dw), dgate.data_ptr(),
                *(t.data_ptr() for t in scratch)])
        else:  # no rows: nothing flows
            dxp.zero_()
            dgate.zero_()
        return dxp, (dh, dc), {"weight_hh": dw, **self.unit_grads(cell, p, chunk, k, dgate)}


def runners(backend):
    add_settings(backend)
    runner = GLSTMExecutor(backend)
    return lambda cell: runner if type(cell) is GLSTMCell else None
