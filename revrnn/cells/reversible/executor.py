"""Glue of the compiled executor for the reversible cells (backends ``cpu`` and ``cuda``): a chunk
of steps of the whole stack per C++ call (``csrc/include/revrnn/reversible.h``), forward and
reverse, with the information buffer's tensors updated in place (:class:`CpuBuffer` on CPU
tensors; on CUDA the buffer's own torch ops serve ``memory="store"``). Weight gradients stay one
torch GEMM per chunk (:class:`~revrnn.cells.reversible.function.Reversible`). 16-bit inputs are
refused: the reversible module runs its cells in float32 itself.

The executor's σ and tanh are libmvec's, whose bits differ from torch's: outputs differ from
``backend="reference"`` at rounding level, while forward and reverse agree bit for bit (both run
the same element functions on the same threads; the plan keeps the forward's thread count).
``memory="store"`` runs the reference half-updates under autograd, with the integer core in C++
(:class:`CpuBuffer`); it is the baseline the reversible mode is measured against.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import linear

from ...backends.compiled import address, bind, layout, target
from ...backends.cpu import TARGET as CPU
from ..base import Params
from .base import Ints, RevCellSpec
from .buffer import KernelBuffer
from .function import RevPlan
from .reference import TorchHalf


class CpuBuffer(KernelBuffer):
    """The information buffer whose single multiplies and divides run the executor's integer
    core (``csrc/include/revrnn/fixed.h``); ``active`` must be a row mask (batch, 1)."""

    def _call(self, fn, h: Tensor, n: Tensor, active: Tensor | None, update: Tensor | None, stacks: list[int]) -> Tensor:
        rows, G = h.shape
        h, n = h.contiguous(), n.expand(rows, G).contiguous()
        q = None if update is None else update.expand(rows, G).contiguous()
        row_mask = None if active is None else active.reshape(rows).contiguous()
        check = CPU.checker(h.device)
        for name, t in (("h", h), ("n", n), ("update", q), ("word", self.word), ("height", self._height)):
            if t is not None:
                check(name, t, (rows, G), torch.int64)
        if row_mask is not None:
            check("active", row_mask, (rows,), torch.bool)
        out = torch.empty_like(h)
        if h.numel():
            fn(rows, G, h.data_ptr(), n.data_ptr(), address(q), address(row_mask), out.data_ptr(), stacks,
               self._scratch.shape[0], self.spill_at, self._op)
        return out

    def _multiply(self, h: Tensor, n: Tensor, active: Tensor | None, update: Tensor | None) -> Tensor:
        return self._call(CPU.module.rev_multiply, h, n, active, update,
                          [self.word.data_ptr(), self._scratch.data_ptr(), self._height.data_ptr(), 0, 0, 0])

    def _divide(self, h: Tensor, n: Tensor, active: Tensor | None, update: Tensor | None) -> Tensor:
        return self._call(CPU.module.rev_divide, h, n, active, update,
                          [self.word.data_ptr(), self._scratch.data_ptr(), self._height.data_ptr(), 0, 0,
                           self._bad.data_ptr()])


def runners(backend):
    return CompiledHalves


class CompiledHalves(TorchHalf):
    """A reversible stack on the executor, a chunk per call; the reference's half-updates (torch
    ops) for ``memory="store"``."""

    def __init__(self, cell: RevCellSpec) -> None:
        super().__init__(cell)
        self.layout, self.missing = layout("reversible_layout", cell.name)

    @staticmethod
    def buffer(shape: tuple[int, ...], forget_bits: int, device: torch.device) -> KernelBuffer:
        """The information buffer on ``device``: single multiplies in C++ on CPU tensors, in torch
        ops elsewhere; chunk calls update its tensors in place on either."""
        return (CpuBuffer if torch.device(device).type == "cpu" else KernelBuffer)(shape, forget_bits, device)

    def refusal(self, cell: RevCellSpec) -> str | None:
        return self.missing

    def forward_chunk(self, plan: RevPlan, params: list[Params], x: Tensor, start: int, ints: list[Ints],
                      surs, hs: list[Tensor], buf) -> Tensor:
        if surs is not None:
            return super().forward_chunk(plan, params, x, start, ints, surs, hs, buf)
        if plan.threads is None:
            plan.threads = target(x.device).where(x.device)
        K, B = x.shape[:2]
        y = x.new_empty(K, B, plan.cells[0].hidden_size)
        self._run(plan, params, x, start, ints, hs, buf, y)
        return y

    def backward_chunk(self, plan: RevPlan, params: list[Params], x: Tensor, start: int, ints: list[Ints],
                       hs: list[Tensor], grads: list[tuple[Tensor, ...]], grad_out: Tensor, buf) -> list[tuple]:
        cell = plan.cells[0]
        K, B = x.shape[:2]
        G, H, R = cell.half, cell.hidden_size, cell.blocks * cell.half
        records = []
        for layer in range(len(plan.cells)):
            new = lambda *shape: x.new_empty(K, B, *shape)  # noqa: E731
            records.append({"da": [new(R), new(R)], "hb": [new(G), new(G)],
                            "rh": [new(G), new(G)] if self.layout["reset"] else [None, None],
                            "xin": new(H) if layer else None})
        grad_y = grad_out.contiguous()
        target(x.device).check("grad_out", grad_y, (K, B, H), x.dtype, x.device)
        self._run(plan, params, x, start, ints, hs, buf, grad_y, grads, records)
        M = K * B
        out = []
        for r in records:
            halves = tuple((r["da"][a].view(M, R), tuple(t.view(M, G) for t in (r["hb"][a], r["rh"][a]) if t is not None))
                           for a in (0, 1))
            out.append((*halves, None if r["xin"] is None else r["xin"].view(M, H)))
        return out

    @torch.no_grad()
    def _run(self, plan: RevPlan, params: list[Params], x: Tensor, start: int, ints: list[Ints], hs: list[Tensor],
             buf, y: Tensor, grads: list[tuple[Tensor, ...]] | None = None, records: list[dict] | None = None) -> None:
        """One C++ call for the chunk: forward (``y`` the outputs) or, with ``grads``, reverse
        (``y`` the outputs' gradients). ``ints``, ``hs`` and ``grads`` are replaced by fresh
        tensors that the call updates in place."""
        cell, reverse = plan.cells[0], grads is not None
        K, B = x.shape[:2]
        G, H, R, dtype = cell.half, cell.hidden_size, cell.blocks * cell.half, x.dtype
        tg, check = bind(x.device)
        dt = tg.flag("input", dtype)
        p0 = params[0]
        w_ih = torch.cat([p0["weight_ih1"], p0["weight_ih2"]])
        bias = torch.cat([p0["bias1"], p0["bias2"]]) if "bias1" in p0 else None
        xp0 = linear(x, w_ih, bias).contiguous()  # the same call in both passes: the same bits
        mask = None if plan.mask is None else plan.mask[start:start + K].contiguous()
        if mask is not None:
            check("mask", mask, (K, B), torch.bool)
        keep, layers = [xp0, mask, w_ih, bias], []
        for layer, p in enumerate(params):
            def operand(name: str, shape: tuple[int, ...]) -> Tensor | None:
                t = p.get(name)
                if t is None:
                    return None
                t = t.contiguous()
                check(f"{name}_l{layer}", t, shape, dtype)
                return t
            upper = layer > 0
            w = [operand(f"weight_ih{j}", (R, H)) if upper else None for j in (1, 2)]
            w += [operand(f"weight_hh{j}", (R, G)) for j in (1, 2)]
            w += [operand(f"bias{j}", (R,)) if upper else None for j in (1, 2)]
            drop = plan.drop[layer] if layer < len(plan.drop) else None
            if drop is not None:
                drop = drop.to(dtype).contiguous()
                check("dropout mask", drop, (B, H), dtype)
            ints[layer] = tuple(s.clone(memory_format=torch.contiguous_format) for s in ints[layer])
            for k, s in enumerate(ints[layer]):
                check(f"state[{k}]", s, (B, H), torch.int64)
            hs[layer] = hs[layer].to(dtype, memory_format=torch.contiguous_format, copy=True)
            check("h", hs[layer], (B, H), dtype)
            # transposed weights: the GEMMs read them untransposed ("nn"), which spares BLAS a packing per call
            w_t = [None if t is None else t.t().contiguous() for t in w[:4]]
            addresses = [*map(address, w), address(drop), *map(address, ints[layer]),
                         *[0] * (2 - len(ints[layer])), hs[layer].data_ptr()]
            if reverse:
                grads[layer] = tuple(g.to(dtype, memory_format=torch.contiguous_format, copy=True) for g in grads[layer])
                for k, g in enumerate(grads[layer]):
                    check(f"grad_state[{k}]", g, (B, H), dtype)
                r = records[layer]
                addresses += [*map(address, grads[layer]), *[0] * (2 - len(grads[layer])),
                              *map(address, r["da"] + r["hb"] + r["rh"]), address(r["xin"])]
            else:
                addresses += [0] * 9
            addresses += list(map(address, w_t))
            keep += [*w, *w_t, drop]
            layers.append(addresses)
        ops = K * plan.ops_per_step
        if buf is None:
            stacks, depth, spill_at, op = [0] * 6, 0, 0, 0
        elif reverse:
            word, scratch, height, bad, op = buf.unclaim(ops)
            stacks, depth, spill_at = [word.data_ptr(), scratch.data_ptr(), height.data_ptr(), 0, 0, bad.data_ptr()], \
                scratch.shape[0], buf.spill_at
        else:
            word, scratch, height, bits, costs, op, spill_at = buf.claim(ops)
            stacks, depth = [word.data_ptr(), scratch.data_ptr(), height.data_ptr(), bits.data_ptr(),
                             costs.data_ptr(), 0], scratch.shape[0]
        L = len(plan.cells)
        scratch_buffers = [x.new_empty(B, R), x.new_empty(B, self.layout["acts"] * G),
                           x.new_empty(B, G) if self.layout["reset"] else None,
                           x.new_empty(B, G) if self.layout["reset"] and reverse else None,
                           x.new_empty(B, 2 * R) if L > 1 else None, x.new_empty(B, H) if L > 1 else None,
                           x.new_empty(B, H) if L > 1 and reverse else None]
        if not B:  # empty tensors have no address to hand out, and there is nothing to run
            return
        run = tg.module.rev_backward_chunk if reverse else tg.module.rev_forward_chunk
        run(cell.name, dt, plan.threads, K, B, G, cell.forget_bits, cell.max_forget, xp0.data_ptr(), address(mask),
            y.data_ptr(), layers, stacks, depth, spill_at, op, list(map(address, scratch_buffers)))
