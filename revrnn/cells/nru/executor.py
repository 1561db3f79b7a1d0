"""Glue of the NRU for the compiled executor (backends ``cpu`` and ``cuda``): its own loop
(``csrc/include/revrnn/nru.h``), which splits the batch rows among the CPU's threads (on CUDA, one
thread per row runs a row's memory update), since the memory update mixes every unit of a row.
Residuals and weight gradients as the Triton runner's (:class:`.chunk.NRUChunks`); 16-bit inputs
run in float32."""
from __future__ import annotations

import torch

from ...backends.compiled import TARGETS, address, bind, compute_dtype, target
from .chunk import NRUChunks
from .spec import L5_EPS


def runners(backend):
    runner = NRUExecutor()
    return lambda cell: runner


class NRUExecutor(NRUChunks):
    """One C++ call per chunk, forward or backward (see ``NruChunk`` in the header)."""

    def refusal(self, cell):
        if not all(hasattr(t.module, "nru_forward") for t in TARGETS.values() if t.module is not None):
            return "the compiled extension has no NRU loop (built from older sources); rebuild it"
        return None

    @staticmethod
    def checked_weights(check, cell, p, dtype):
        w_hh, w_heads, b_heads = (None if t is None else t.contiguous() for t in NRUChunks.weights(cell, p, dtype))
        L = cell.hidden_size + cell.memory_size
        check("weight_hh", w_hh, (cell.hidden_size, L), dtype)
        check("weight_heads", w_heads, (cell.head_rows, L), dtype)
        if b_heads is not None:
            check("bias_heads", b_heads, (cell.head_rows,), dtype)
        return w_hh, w_heads, b_heads

    @staticmethod
    def run(backward, cell, dtype, K, B, keep, tensors):
        """The C++ chunk on ``tensors`` (in the order of ``run_nru`` in ``csrc/chunks.h``; None
        where unused, the states ``tensors[5]`` never); the caller holds them while it runs."""
        if B == 0:  # empty tensors have no address to hand out, and there is nothing to run
            return
        device = tensors[5].device
        tg = target(device)
        fn = tg.module.nru_backward if backward else tg.module.nru_forward
        fn(tg.flag("states", dtype), tg.where(device), K, B, cell.hidden_size, cell.memory_size, cell.num_heads,
           cell.use_relu, cell.memory_clamp, L5_EPS, keep, [address(t) for t in tensors])

    @staticmethod
    def scratch(cell, B, like):
        """The heads (B, 2k + 4r) and the per-row work (revrnn/nru.h: nru::work_size)."""
        work = target(like.device).module.nru_work_size(cell.num_heads, cell.memory_size)
        return like.new_empty(B, cell.head_rows), like.new_empty(B, work)

    @torch.no_grad()
    def forward(self, cell, p, extras, chunk, state, keep):
        dtype = compute_dtype(chunk.xp.dtype)
        xp = chunk.xp.to(dtype).contiguous()
        K, B, H = xp.shape
        tg, check = bind(xp.device)
        tg.flag("xp", dtype)
        check("xp", xp, (K, B, H), dtype)
        weights = self.checked_weights(check, cell, p, dtype)
        for k, (part, size) in enumerate(zip(state, cell.state_sizes)):
            check(f"state[{k}]", part, (B, size), part.dtype if dtype != chunk.xp.dtype else dtype,
                  contiguous=False)  # copied below, 16-bit inputs' states widened
        mask, _ = tg.mask(chunk, K, B, xp.device)
        s = self.states(cell, state, K + 1 if keep else 2, xp.new_empty)
        y = xp.new_empty(K, B, H)
        self.run(False, cell, dtype, K, B, keep,
                 [xp, *weights, mask, s, y, None, None, None, xp.new_empty(B, H), *self.scratch(cell, B, xp)])
        end = tuple(e.to(given.dtype) for e, given in zip(self.split(s[K if keep else K % 2], H), state))
        return y.to(chunk.xp.dtype), end, ((s,) if keep else None)

    @torch.no_grad()
    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        (s,) = residuals
        K, B, L = s.shape[0] - 1, s.shape[1], s.shape[2]
        H, dtype = cell.hidden_size, s.dtype
        tg, check = bind(s.device)
        tg.flag("residual states", dtype)
        check("residual states", s, (K + 1, B, H + cell.memory_size), dtype)
        weights = self.checked_weights(check, cell, p, dtype)
        grad_y = grad_out.to(dtype).contiguous()
        check("grad_out", grad_y, (K, B, H), dtype)
        g = torch.cat([gs.to(dtype) for gs in grad_state], 1)  # [dh; dm], updated in place
        check("grad_state", g, (B, L), dtype)
        mask, _ = tg.mask(chunk, K, B, s.device)
        dxp, dheads = s.new_empty(K, B, H), s.new_empty(K, B, cell.head_rows)
        self.run(True, cell, dtype, K, B, False,
                 [None, *weights, mask, s, grad_y, g, dxp, dheads, s.new_empty(B, L), *self.scratch(cell, B, s)])
        grads = {k: v if v is None or k not in p else v.to(p[k].dtype) for k, v in self.grads(cell, p, s, dxp, dheads).items()}
        return (dxp.to(chunk.xp.dtype), tuple(d.to(given.dtype) for d, given in zip(self.split(g, H), grad_state)),
                grads)
