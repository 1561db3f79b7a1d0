"""The compiled CPU backend: the C++ executor runs a whole chunk per call, per step one BLAS
GEMM and one fused, vectorised pointwise pass (``csrc/``, module ``revrnn._C``).

The C++ core is framework-free: it takes raw addresses, sizes and a dtype flag, and loads its
BLAS at run time (by default the OpenBLAS of the ``scipy-openblas32`` package; ``REVRNN_BLAS``
names another library and ``REVRNN_BLAS_PREFIX`` its symbols' prefix). Everything torch is here
and in the families' glue (``revrnn/cells/<family>/cpu.py``): allocation and the checks that make
handing out raw pointers safe (device, dtype, shape, contiguity), done once per chunk.
"""
from __future__ import annotations

import importlib
import os

import torch
from torch import Tensor

from ..cells.base import CellSpec, Params, State
from .base import Backend, Chunk, Runner


def _load() -> tuple[object | None, str | None]:
    """The extension with its BLAS loaded, or None and why not."""
    try:
        C = importlib.import_module("revrnn._C")
    except ImportError as err:  # not built (no compiler, REVRNN_NO_EXT=1) or not loadable
        return None, (f"the compiled extension revrnn._C is not built: {err} "
                      "(see docs/build.md; `pip install -v .` shows why the build was skipped)")
    path, prefix = os.environ.get("REVRNN_BLAS"), os.environ.get("REVRNN_BLAS_PREFIX", "")
    if not path:
        try:
            import scipy_openblas32 as openblas
        except ImportError:
            return None, ("its BLAS is missing: install scipy-openblas32 (a dependency of revrnn), "
                          "or name a BLAS library in REVRNN_BLAS")
        path, prefix = os.path.join(openblas.get_lib_dir(), openblas.get_library(True)), "scipy_"
    error = C.load_blas(path, prefix)
    return (None, f"its BLAS did not load: {error}") if error else (C, None)


_C, _REASON = _load()


def flag(name: str, dtype: torch.dtype):
    """The C++ dtype flag for ``dtype``; the error names the tensor."""
    if dtype == torch.float32:
        return _C.DType.float32
    if dtype == torch.float64:
        return _C.DType.float64
    raise TypeError(f"backend 'cpu' supports float32 and float64, got {name} of dtype {dtype}; "
                    "use backend='reference'")


def check(name: str, t: Tensor, shape: tuple[int, ...], dtype: torch.dtype,
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


def mask_address(chunk: Chunk, K: int, B: int) -> tuple[Tensor | None, int]:
    """The chunk's mask as contiguous bytes (torch.bool is one byte, 0 or 1) and its address
    (0: no mask). Callers hold on to the tensor while the address is in use."""
    if chunk.mask is None:
        return None, 0
    if chunk.mask.dtype != torch.bool:
        raise TypeError(f"backend 'cpu': mask must have dtype torch.bool, got {chunk.mask.dtype}")
    mask = chunk.mask.contiguous()
    check("mask", mask, (K, B), torch.bool)
    return mask, mask.data_ptr()


def address(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


class Executor(Runner):
    """The chunk contract through the C++ executor for one cell of ``csrc/include/revrnn/cells.h``
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
        try:
            layout = _C.cell_layout(self.cell)
            self.missing = None
        except ValueError as err:  # an extension built from older sources: rebuild it
            self.missing = f"the compiled extension revrnn._C has no {self.cell!r} cell ({err}); rebuild it"
            return
        self.states, self.phases, self.gates = layout["states"], layout["phases"], layout["gates"]
        self.xp_gates, self.acts, self.rec_is_xp = layout["xp_gates"], layout["acts"], layout["rec_is_xp"]
        self.reads_rec_bias, self.reads_aux, self.reads_unit = layout["rec_bias"], layout["aux"], layout["unit"]
        self.feedback, self.proj, self.reads_params = layout["feedback"], layout["proj"], layout["params"]

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

    def checked_params(self, cell: CellSpec, p: Params, dtype: torch.dtype) -> Tensor | None:
        if not self.reads_params:
            return None
        params = self.params(cell, p).to(dtype).contiguous()
        check("params", params, (params.numel(),), dtype)
        return params

    def checked_projection(self, cell: CellSpec, p: Params, dtype: torch.dtype) -> Tensor | None:
        """Projected cells: ``weight_hr`` (P, H), h = mid weight_hr^T."""
        if not self.proj:
            return None
        w_hr = p["weight_hr"].contiguous()
        check("weight_hr", w_hr, (cell.state_sizes[0], cell.hidden_size), dtype)
        return w_hr

    def checked_unit(self, cell: CellSpec, p: Params, chunk: Chunk, K: int, dtype: torch.dtype) -> Tensor | None:
        if not self.reads_unit:
            return None
        unit = self.unit(cell, p, chunk, dtype).contiguous()
        check("unit", unit, (K, cell.hidden_size), dtype)
        return unit

    def checked_aux(self, cell: CellSpec, extras: Params, B: int, like: Tensor) -> Tensor | None:
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
        xp = chunk.xp.contiguous()
        K, B, _ = xp.shape
        H, dtype = cell.hidden_size, xp.dtype
        G = self.gates * H
        dt = flag("xp", dtype)
        check("xp", xp, (K, B, self.xp_gates * H), dtype)
        sizes = cell.state_sizes  # h first: P features for projected cells, else H
        w = self.recurrent_weight(cell, p).contiguous()
        check("weight_hh", w, (G, sizes[0]), dtype)
        w_hr = self.checked_projection(cell, p, dtype)
        params = self.checked_params(cell, p, dtype)
        bias = self.rec_bias(cell, p)
        if bias is None and self.reads_rec_bias:  # zeros: the cell's loops do not branch on it
            bias = xp.new_zeros(G)
        if bias is not None:
            bias = bias.contiguous()
            check("recurrent bias", bias, (G,), dtype)
        for k, s in enumerate(state):
            check(f"state[{k}]", s, (B, sizes[k]), dtype, contiguous=False)  # copied below: any layout will do
        mask, mask_ptr = mask_address(chunk, K, B)
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
        aux = self.checked_aux(cell, extras, B, xp)
        unit = self.checked_unit(cell, p, chunk, K, dtype)
        if B and H:  # empty tensors have no address to hand out, and there is nothing to run
            _C.forward_chunk(self.cell, dt, torch.get_num_threads(), K, B, H, xp.data_ptr(), w.data_ptr(),
                             address(bias), mask_ptr, [s.data_ptr() for s in states], act.data_ptr(),
                             y.data_ptr(), rec.data_ptr(), keep, address(aux), address(mid), address(unit),
                             address(fb), sizes[0], address(w_hr), address(params))
        last = K if keep else K % 2
        # Clones: the end state is returned to the caller and must not alias the residuals.
        end = tuple(s[last].clone() for s in states)
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
        K, B, _ = act.shape
        H, dtype = cell.hidden_size, act.dtype
        G = self.gates * H
        dt = flag("act", dtype)
        check("act", act, (K, B, self.acts * H), dtype)
        sizes = cell.state_sizes
        for k, s in enumerate(states):
            check(f"residual state[{k}]", s, (K + 1, B, sizes[k]), dtype)
        if mid is not None:
            check("mid", mid, (K, B, H), dtype)
        if fb is not None:
            check("fb", fb, (K + 1, B, H), dtype)
        w = self.recurrent_weight(cell, p).contiguous()
        check("weight_hh", w, (G, sizes[0]), dtype)
        w_hr = self.checked_projection(cell, p, dtype)
        params = self.checked_params(cell, p, dtype)
        dparams = None if params is None else torch.zeros_like(params)  # accumulated over the chunk
        grad_y = grad_out.contiguous()
        check("grad_out", grad_y, (K, B, sizes[0]), dtype)
        # Updated in place step by step, so always fresh buffers.
        dstate = [g.to(dtype, memory_format=torch.contiguous_format, copy=True) for g in grad_state]
        for k, g in enumerate(dstate):
            check(f"grad_state[{k}]", g, (B, sizes[k]), dtype)
        mask, mask_ptr = mask_address(chunk, K, B)
        dxp = act.new_empty(K, B, self.xp_gates * H)
        drec = dxp if self.rec_is_xp else act.new_empty(K, B, G)
        dw = act.new_empty(w.shape) if p["weight_hh"].requires_grad else None
        aux = self.checked_aux(cell, extras, B, act)
        dmid = act.new_empty(B, H) if mid is not None else None
        dproj = act.new_empty(K, B, sizes[0]) if w_hr is not None else None
        dw_hr = act.new_empty(w_hr.shape) if w_hr is not None and w_hr.requires_grad else None
        dfb = act.new_empty(B, H) if fb is not None else None
        unit = self.checked_unit(cell, p, chunk, K, dtype)
        dunit = act.new_empty(K, B, H) if unit is not None else None
        if B and H:
            _C.backward_chunk(self.cell, dt, torch.get_num_threads(), K, B, H, w.data_ptr(), mask_ptr,
                              act.data_ptr(), [s.data_ptr() for s in states], grad_y.data_ptr(),
                              [g.data_ptr() for g in dstate], dxp.data_ptr(), drec.data_ptr(), address(dw),
                              address(aux), address(mid), address(dmid), address(unit), address(dunit),
                              address(fb), address(dfb), sizes[0], address(w_hr), address(dproj), address(dw_hr),
                              address(params), address(dparams))
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
        return dxp, tuple(dstate), grads


class CpuBackend(Backend):
    """The compiled executor on CPU tensors, float32 and float64, for the cells whose family has
    glue for it."""

    name = "cpu"
    traceable = False  # raw pointers into a C++ call

    def availability(self, device: torch.device) -> str | None:
        if _C is None:
            return _REASON
        if device.type != "cpu":
            return f"it runs on CPU tensors only, got a {device.type} device"
        return None

    def load_glue(self, families) -> None:
        if _C is not None:  # without the extension availability says why
            super().load_glue(families)
