"""The chunk contract through the compiled executor, on either of its targets (:mod:`.compiled`:
``revrnn._C`` on CPU tensors, ``revrnn._C_cuda`` on CUDA tensors): allocation and the checks that
make handing out raw addresses safe (device, dtype, shape, contiguity), done once per chunk, and
one call per chunk. Families subclass :class:`Executor` in their ``executor.py`` glue.

Inputs in bfloat16 or float16 run their chunks in float32 (:func:`~.compiled.compute_dtype`):
projections, weights and states are widened once per chunk, residuals are float32, and the
outputs, end states and gradients are handed back in the dtypes they belong to.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..cells.base import CellSpec, Params, State
from .base import Chunk, Runner
from .compiled import address, bind, compute_dtype, layout


def state_dtype(input_dtype: torch.dtype, given: torch.dtype) -> torch.dtype:
    """The dtype a chunk's start state must have: the input's, or any float for 16-bit inputs
    (the cell's state dtype may be float32 there), which the chunk widens."""
    return given if compute_dtype(input_dtype) != input_dtype and given.is_floating_point else input_dtype


class Executor(Runner):
    """The chunk contract through the compiled executor for one cell of ``csrc/include/revrnn/cells.h``
    (``cell``: its name there, the class attribute or the constructor's argument). Families subclass it for the parameters their step reads
    besides ``weight_hh`` (:meth:`rec_bias`) and their gradients, for a per-sequence operand
    from the cell's extras (:meth:`aux`), and for a per-step, per-unit one (:meth:`unit`).

    Residuals of a chunk of K steps: ``(act, *states)``, the kept activations (K, B, A) and every
    state tensor before and after each step (K+1, B, its size); two-phase cells (a second GEMM per
    step on ``mid``, e.g. the reset gate times h) and projected cells (h = mid W_hr^T, the LSTM's
    ``proj_size``) keep ``mid`` (K, B, H) after ``act``, and cells whose GEMM reads a feedback g(h)
    keep it (K+1, B, H) after that.
    """

    #: the cell's name in the executor
    cell: str = ""

    def __init__(self, cell: str | None = None) -> None:
        self.cell = cell or self.cell
        found, self.missing = layout("cell_layout", self.cell)
        if found is None:
            return
        self.states, self.phases, self.gates = found["states"], found["phases"], found["gates"]
        self.xp_gates, self.acts, self.rec_is_xp = found["xp_gates"], found["acts"], found["rec_is_xp"]
        self.reads_rec_bias, self.reads_aux, self.reads_unit = found["rec_bias"], found["aux"], found["unit"]
        self.feedback, self.proj, self.reads_params = found["feedback"], found["proj"], found["params"]

    def refusal(self, cell: CellSpec) -> str | None:
        return self.missing

    def recurrent_weight(self, cell: CellSpec, p: Params) -> Tensor:
        """The (G, H) weight of the step's recurrent GEMMs: ``weight_hh``, unless the family
        lays it out otherwise (:meth:`recurrent_weight_grad` maps its gradient back)."""
        return p["weight_hh"]

    def recurrent_weight_grad(self, cell: CellSpec, p: Params, dw: Tensor | None) -> Tensor | None:
        return dw

    def rec_bias(self, cell: CellSpec, p: Params) -> Tensor | None:
        """The (G) bias the step adds to ``h W_hh^T``, or None."""
        return None

    def rec_bias_grads(self, cell: CellSpec, p: Params, drec: Tensor) -> dict[str, Tensor | None]:
        """Gradients of the parameters behind :meth:`rec_bias`, from ``d rec`` (K, B, G)."""
        return {}

    def aux(self, cell: CellSpec, extras: Params, B: int, like: Tensor) -> Tensor:
        """Cells that read a per-sequence operand (``aux`` in ``cell_layout``): that operand,
        (B, H), e.g. a recurrent-dropout mask."""
        raise NotImplementedError

    def unit(self, cell: CellSpec, p: Params, chunk: Chunk, dtype: torch.dtype) -> Tensor:
        """Cells that read a per-step, per-unit operand (``unit`` in ``cell_layout``): that
        operand for the chunk's steps, (K, H), e.g. per-unit time gates."""
        raise NotImplementedError

    def unit_grads(self, cell: CellSpec, p: Params, chunk: Chunk, unit: Tensor, dunit: Tensor
                   ) -> dict[str, Tensor | None]:
        """The parameter gradients behind :meth:`unit`, from ``d unit`` (K, H)."""
        raise NotImplementedError

    def params(self, cell: CellSpec, p: Params) -> Tensor:
        """Cells that read parameters beyond the GEMMs' (``params`` in ``cell_layout``): those,
        flat, in the layout their header documents (e.g. ``csrc/include/revrnn/gates.h``)."""
        raise NotImplementedError

    def params_grads(self, cell: CellSpec, p: Params, dparams: Tensor) -> dict[str, Tensor | None]:
        """The parameter gradients behind :meth:`params`, from ``dparams`` (their gradient in
        that layout, where the cell writes one)."""
        raise NotImplementedError

    def checked_params(self, check, cell: CellSpec, p: Params, dtype: torch.dtype) -> Tensor | None:
        if not self.reads_params:
            return None
        params = self.params(cell, p).to(dtype).contiguous()
        check("params", params, (params.numel(),), dtype)
        return params

    def checked_projection(self, check, cell: CellSpec, p: Params, dtype: torch.dtype) -> Tensor | None:
        """Projected cells: ``weight_hr`` (P, H), h = mid weight_hr^T."""
        if not self.proj:
            return None
        w_hr = p["weight_hr"].to(dtype).contiguous()
        check("weight_hr", w_hr, (cell.state_sizes[0], cell.hidden_size), dtype)
        return w_hr

    def checked_unit(self, check, cell: CellSpec, p: Params, chunk: Chunk, K: int, dtype: torch.dtype) -> Tensor | None:
        if not self.reads_unit:
            return None
        unit = self.unit(cell, p, chunk, dtype).contiguous()
        check("unit", unit, (K, cell.hidden_size), dtype)
        return unit

    def checked_aux(self, check, cell: CellSpec, extras: Params, B: int, like: Tensor) -> Tensor | None:
        if not self.reads_aux:
            return None
        aux = self.aux(cell, extras, B, like).to(like.dtype).contiguous()
        check("aux", aux, (B, cell.hidden_size), like.dtype)
        return aux

    # The steps are not differentiable torch ops (raw pointers); the engine differentiates the
    # chunk through backward, so no graph is ever wanted here, whatever the grad mode.
    @torch.no_grad()
    def forward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                state: State, keep: bool) -> tuple[Tensor, State, tuple[Tensor, ...] | None]:
        device = chunk.xp.device
        tg, check = bind(device)
        dtype = compute_dtype(chunk.xp.dtype)  # 16-bit inputs run in float32
        dt = tg.flag("xp", dtype)
        xp = chunk.xp.to(dtype).contiguous()
        K, B, _ = xp.shape
        H = cell.hidden_size
        G = self.gates * H
        check("xp", xp, (K, B, self.xp_gates * H), dtype)
        sizes = cell.state_sizes  # h first: P features for projected cells, else H
        w = self.recurrent_weight(cell, p).to(dtype).contiguous()
        check("weight_hh", w, (G, sizes[0]), dtype)
        w_hr = self.checked_projection(check, cell, p, dtype)
        params = self.checked_params(check, cell, p, dtype)
        bias = self.rec_bias(cell, p)
        if bias is None and self.reads_rec_bias:  # zeros: the cell's loops do not branch on it
            bias = xp.new_zeros(G)
        if bias is not None:
            bias = bias.to(dtype).contiguous()
            check("recurrent bias", bias, (G,), dtype)
        for k, s in enumerate(state):  # copied below: any layout will do, and 16-bit states are widened
            check(f"state[{k}]", s, (B, sizes[k]), state_dtype(chunk.xp.dtype, s.dtype), contiguous=False)
        mask, mask_ptr = tg.mask(chunk, K, B, device)
        # Backward needs every step's activations and states; without `keep` two rows of
        # states used alternately and one row of activations are enough.
        rows = K + 1 if keep else 2
        states = [xp.new_empty(rows, B, size) for size in sizes]
        for buffer, s in zip(states, state):
            buffer[0] = s
        act = xp.new_empty(K if keep else 1, B, self.acts * H)
        mid = xp.new_empty(K if keep else 1, B, H) if self.phases == 2 or self.proj else None
        fb = xp.new_empty(rows, B, H) if self.feedback else None  # g(h), as the states
        y, rec = xp.new_empty(K, B, sizes[0]), xp.new_empty(B, G)
        aux = self.checked_aux(check, cell, extras, B, xp)
        unit = self.checked_unit(check, cell, p, chunk, K, dtype)
        if B and H:  # empty tensors have no address to hand out, and there is nothing to run
            tg.module.forward_chunk(self.cell, dt, tg.where(device), K, B, H, xp.data_ptr(), w.data_ptr(),
                                    address(bias), mask_ptr, [s.data_ptr() for s in states], act.data_ptr(),
                                    y.data_ptr(), rec.data_ptr(), keep, address(aux), address(mid), address(unit),
                                    address(fb), sizes[0], address(w_hr), address(params))
        last = K if keep else K % 2
        # Copies: the end state is returned to the caller and must not alias the residuals.
        end = tuple(s[last].to(given.dtype, copy=True) for s, given in zip(states, state))
        y = y.to(chunk.xp.dtype)
        if not keep:
            return y, end, None
        return y, end, (act, *(t for t in (mid, fb) if t is not None), *states)

    @torch.no_grad()
    def backward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk,
                 residuals: tuple[Tensor, ...], grad_out: Tensor, grad_state: State
                 ) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        act, *states = residuals
        mid = states.pop(0) if self.phases == 2 or self.proj else None
        fb = states.pop(0) if self.feedback else None
        device = act.device
        tg, check = bind(device)
        K, B, _ = act.shape
        H, dtype = cell.hidden_size, act.dtype  # the forward's compute dtype
        G = self.gates * H
        dt = tg.flag("act", dtype)
        check("act", act, (K, B, self.acts * H), dtype)
        sizes = cell.state_sizes
        for k, s in enumerate(states):
            check(f"residual state[{k}]", s, (K + 1, B, sizes[k]), dtype)
        if mid is not None:
            check("mid", mid, (K, B, H), dtype)
        if fb is not None:
            check("fb", fb, (K + 1, B, H), dtype)
        w = self.recurrent_weight(cell, p).to(dtype).contiguous()
        check("weight_hh", w, (G, sizes[0]), dtype)
        w_hr = self.checked_projection(check, cell, p, dtype)
        params = self.checked_params(check, cell, p, dtype)
        dparams = None if params is None else torch.zeros_like(params)  # accumulated over the chunk
        grad_y = grad_out.to(dtype).contiguous()
        check("grad_out", grad_y, (K, B, sizes[0]), dtype)
        # Updated in place step by step, so always fresh buffers.
        dstate = [g.to(dtype, memory_format=torch.contiguous_format, copy=True) for g in grad_state]
        for k, g in enumerate(dstate):
            check(f"grad_state[{k}]", g, (B, sizes[k]), dtype)
        mask, mask_ptr = tg.mask(chunk, K, B, device)
        dxp = act.new_empty(K, B, self.xp_gates * H)
        drec = dxp if self.rec_is_xp else act.new_empty(K, B, G)
        dw = act.new_empty(w.shape) if p["weight_hh"].requires_grad else None
        aux = self.checked_aux(check, cell, extras, B, act)
        dmid = act.new_empty(B, H) if mid is not None else None
        dproj = act.new_empty(K, B, sizes[0]) if w_hr is not None else None
        dw_hr = act.new_empty(w_hr.shape) if w_hr is not None and p["weight_hr"].requires_grad else None
        dfb = act.new_empty(B, H) if fb is not None else None
        unit = self.checked_unit(check, cell, p, chunk, K, dtype)
        dunit = act.new_empty(K, B, H) if unit is not None else None
        if B and H:
            tg.module.backward_chunk(self.cell, dt, tg.where(device), K, B, H, w.data_ptr(), mask_ptr,
                                     act.data_ptr(), [s.data_ptr() for s in states], grad_y.data_ptr(),
                                     [g.data_ptr() for g in dstate], dxp.data_ptr(), drec.data_ptr(), address(dw),
                                     address(aux), address(mid), address(dmid), address(unit), address(dunit),
                                     address(fb), address(dfb), sizes[0], address(w_hr), address(dproj),
                                     address(dw_hr), address(params), address(dparams))
        else:  # no rows: nothing flows into the weights (d rec, d h and d unit are empty)
            for t in (dw, dw_hr):
                if t is not None:
                    t.zero_()
        grads = {"weight_hh": self.recurrent_weight_grad(cell, p, dw), **self.rec_bias_grads(cell, p, drec)}
        if w_hr is not None:
            grads["weight_hr"] = dw_hr
        if params is not None:
            grads.update(self.params_grads(cell, p, dparams))
        if unit is not None:
            grads.update(self.unit_grads(cell, p, chunk, unit, dunit.sum(1)))
        # in the dtypes of what they are gradients of (16-bit inputs ran in float32)
        grads = {k: g if g is None or k not in p else g.to(p[k].dtype) for k, g in grads.items()}
        return dxp.to(chunk.xp.dtype), tuple(d.to(g.dtype) for d, g in zip(dstate, grad_state)), grads
