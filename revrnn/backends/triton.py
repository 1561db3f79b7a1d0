"""The Triton backend: per step one recurrent GEMM through torch (cuBLAS on GPU) and one fused
Triton pointwise kernel; the backward walks the chunk in reverse with one fused kernel and one
GEMM per step, then computes the chunk's weight gradients as one GEMM over all its steps.

Kernels live in :mod:`revrnn.kernels` (``kernels/`` in the source tree), one module per cell
family; this module owns allocation, dtypes and the GEMMs. Each cell family has a *runner*
(:class:`Runner`) that the backend picks by cell type; a cell without one is not supported
(``auto`` then falls back to the next backend).

Dtypes: float32, float64, bfloat16 and float16 inputs. GEMMs run in the input dtype; states,
their gradients and all pointwise arithmetic are float32 (float64 for float64 input), so a
low-precision run accumulates its state in float32 within a chunk. States are handed back to
the engine in the input dtype (the cell's state dtype) at chunk ends.

On CPU tensors the kernels run in Triton's interpreter (``TRITON_INTERPRET=1``, set before
revrnn is imported), which is how CI tests them; ``auto`` never picks this backend on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..cells.base import CellSpec, Params, State
from ..cells.glstm import SIGMA_MIN, GLSTMCell
from ..cells.gru import GRUCell
from ..cells.libru import LiBRUCell, log_eps, safe_log
from ..cells.ligru import LiGRUCell
from ..cells.lstm import LSTMCell
from ..cells.mgu import MGUCell
from .base import Backend, Chunk

#: input dtypes the kernels take
DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


try:  # at import, not first use: torch.compile cannot trace an import
    from ..kernels import common, gru, light, lstm, persistent
    _MISSING = None
except ImportError as err:  # Triton is not installed
    common = gru = light = lstm = persistent = None
    _MISSING = f"Triton is not importable ({err}); pip install triton"


class Steps:
    """Buffers of one chunk of K steps: float states ``(K + 1)`` rows deep when kept for
    backward, else two rows used alternately."""

    def __init__(self, chunk: Chunk, state: State, keep: bool) -> None:
        self.xp = chunk.xp.contiguous()
        self.K, self.B = self.xp.shape[:2]
        self.dtype = self.xp.dtype
        self.sdtype = common.state_dtype(self.dtype)
        self.keep = keep
        rows = self.K + 1 if keep else 2
        self.states = []
        for s in state:
            buf = common.new((rows, *s.shape), self.sdtype, s.device)
            buf[0] = s
            self.states.append(buf)
        self.mask = chunk_mask(chunk)

    def new(self, *shape: int, dtype: torch.dtype | None = None) -> Tensor:
        return common.new(shape, dtype or self.sdtype, self.xp.device)

    def rows(self, i: int) -> tuple[int, int]:
        """Rows of the states before and after step ``i``."""
        return (i, i + 1) if self.keep else (i % 2, (i + 1) % 2)

    def mask_at(self, i: int) -> Tensor | None:
        return None if self.mask is None else self.mask[i]

    def end(self) -> State:
        """The state after the chunk, in the input dtype; copies, never views of the residuals."""
        last = self.K if self.keep else self.K % 2
        return tuple(s[last].to(self.dtype, copy=True) for s in self.states)


def grad_buffers(grad_state: State, sdtype: torch.dtype) -> list[Tensor]:
    """Fresh contiguous state-gradient buffers that the backward kernels update in place."""
    return [g.to(sdtype, memory_format=torch.contiguous_format, copy=True) for g in grad_state]


def weight_grad(dpre: Tensor, operand: Tensor, dtype: torch.dtype) -> Tensor:
    """``Σ_steps dpreᵀ · operand`` as one GEMM: dpre (K, B, G), operand (K, B, H) -> (G, H)."""
    K, B, G = dpre.shape
    return dpre.reshape(K * B, G).t().to(dtype) @ operand.reshape(K * B, -1).to(dtype)


class Runner:
    """The forward and backward of one cell family over a chunk (see :class:`Backend`)."""

    def forward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk, state: State,
                keep: bool) -> tuple[Tensor, State, tuple | None]:
        raise NotImplementedError

    def backward(self, cell: CellSpec, p: Params, extras: Params, chunk: Chunk, residuals: tuple,
                 grad_out: Tensor, grad_state: State) -> tuple[Tensor, State, dict[str, Tensor | None]]:
        raise NotImplementedError


class LSTMRunner(Runner):
    """torch.nn.LSTM (no projection) and, with the time gate, the g-LSTM (dense: every unit is
    computed and closed units are passed through by the kernel).

    Residuals: the activations (K, B, 4H) in the input dtype and the float states (K + 1, B, H).
    """

    def __init__(self, backend: "TritonBackend") -> None:
        self.backend = backend

    @staticmethod
    def time_gate(cell: CellSpec, p: Params, chunk: Chunk, sdtype: torch.dtype) -> Tensor | None:
        """The g-LSTM's gates of the chunk's steps (K, H); None for the plain LSTM."""
        if not isinstance(cell, GLSTMCell):
            return None
        t = torch.arange(chunk.t0, chunk.t0 + chunk.xp.shape[0], device=chunk.xp.device)
        return cell.time_gate(p, t).to(sdtype).contiguous()

    def forward(self, cell, p, extras, chunk, state, keep):
        if self.backend.use_persistent(cell, chunk.xp):
            y, h, c, res = persistent.lstm_forward(chunk.xp, p["weight_hh"], *state, chunk.mask, keep)
            return y, (h.to(y.dtype), c.to(y.dtype)), res
        run = Steps(chunk, state, keep)
        K, B, G = run.xp.shape
        H = G // 4
        hs, cs = run.states
        w_t = p["weight_hh"].t()
        k = self.time_gate(cell, p, chunk, run.sdtype)
        act = run.new(K, B, G, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, H, dtype=run.dtype), run.new(B, G, dtype=run.dtype)
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype), w_t, out=rec)
            lstm.lstm_forward_step(run.xp[i], rec, hs[r], cs[r], run.mask_at(i), None if k is None else k[i],
                                   hs[w], cs[w], y[i], None if act is None else act[i])
        return y, run.end(), ((act, hs, cs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        act, hs, cs = residuals
        K, B, G = act.shape
        dtype, sdtype = act.dtype, hs.dtype
        w = p["weight_hh"]
        if self.backend.use_persistent(cell, act):  # the same residual layout as the step kernels'
            gxp, dh, dc, dw = persistent.lstm_backward(residuals, w, grad_out, *grad_state, chunk.mask,
                                                       w.requires_grad)
            return gxp, (dh.to(dtype), dc.to(dtype)), {"weight_hh": dw}
        k = self.time_gate(cell, p, chunk, sdtype)
        mask = chunk_mask(chunk)
        dh, dc = grad_buffers(grad_state, sdtype)
        dgates = common.new((K, B, G), sdtype, act.device)
        dk = None if k is None else torch.empty_like(hs[1:])
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            lstm.lstm_backward_step(act[i], hs[i], cs[i], None if mask is None else mask[i],
                                    None if k is None else k[i], dy[i], dh, dc, dgates[i],
                                    None if dk is None else dk[i])
            dh += dgates[i].to(dtype) @ w.to(dtype)  # the recurrent part of dh_{t-1}
        grads: dict[str, Tensor | None] = {"weight_hh": weight_grad(dgates, hs[:K], dtype) if w.requires_grad else None}
        if k is not None:
            grads.update(time_gate_grads(cell, p, chunk, k, dk.sum(1)))
        return dgates.to(dtype), (dh.to(dtype), dc.to(dtype)), grads


@dataclass
class SparseWork:
    """Unit-steps of the g-LSTM evaluated by the sparse path's forward passes (recomputation
    included) against the dense count: ``1 − open/total`` of the pointwise work, of the
    recurrent GEMM and of the kept activations is skipped."""

    open: int = 0
    total: int = 0

    @property
    def skipped_fraction(self) -> float:
        return 1.0 - self.open / self.total if self.total else 0.0


class SparseGLSTMRunner(LSTMRunner):
    """The g-LSTM computing only open units: the time gate depends only on t, μ and σ, so
    each step's open units are known before it runs. Per step the open units' rows of
    ``W_hh`` and columns of the projected input are gathered, the GEMM and the LSTM kernel run
    on them alone, and their results are scattered into the state; a step with no open unit
    costs nothing but the output copy. One host synchronisation per chunk reads the counts.

    Residuals store nothing for closed units: the end state, and per step the open units'
    indices, previous states and activations. Backward restores each previous state from the
    end state by writing those back, walking the chunk in reverse.
    """

    #: ``auto`` runs a chunk sparse when at most this fraction of its unit-steps is open
    max_open = 0.5

    def sparse(self, k: Tensor) -> bool:
        mode = self.backend.glstm_sparse
        return mode == "always" or (mode == "auto" and (k > 0).double().mean().item() <= self.max_open)

    @staticmethod
    def open_units(k: Tensor) -> tuple[list[int], Tensor]:
        """Per step the number of open units, and their indices concatenated."""
        nz = (k > 0).nonzero()
        return torch.bincount(nz[:, 0], minlength=k.shape[0]).tolist(), nz[:, 1]

    @staticmethod
    def gate_rows(idx: Tensor, H: int) -> Tensor:
        """Rows (and projection columns) of the four gates of units ``idx``."""
        return (torch.arange(4, device=idx.device)[:, None] * H + idx).reshape(-1)

    def forward(self, cell, p, extras, chunk, state, keep):
        run = Steps(chunk, state, keep=False)
        K, B, G = run.xp.shape
        H = G // 4
        k = self.time_gate(cell, p, chunk, run.sdtype)
        if not self.sparse(k):
            return super().forward(cell, p, extras, chunk, state, keep)
        h, c = (s[0].clone() for s in run.states)
        counts, idx = self.open_units(k)
        work = self.backend.sparse_work
        work.open += sum(counts)
        work.total += K * H
        y = run.new(K, B, H, dtype=run.dtype)
        olds, acts, off = [], [], 0
        for i, n in enumerate(counts):
            if n:
                units = idx[off:off + n]
                rows = self.gate_rows(units, H)
                off += n
                h_o, c_o = h[:, units], c[:, units]
                rec = h.to(run.dtype) @ p["weight_hh"][rows].t()
                act = run.new(B, 4 * n, dtype=run.dtype) if keep else None
                h_n, c_n, y_o = run.new(B, n), run.new(B, n), run.new(B, n, dtype=run.dtype)
                lstm.lstm_forward_step(run.xp[i][:, rows].contiguous(), rec, h_o, c_o, run.mask_at(i),
                                       k[i, units].contiguous(), h_n, c_n, y_o, act)
                h[:, units], c[:, units] = h_n, c_n
                if keep:
                    olds.append(torch.stack((h_o, c_o)))
                    acts.append(act)
            y[i] = h if run.mask is None else h * run.mask[i, :, None]
        end = (h.to(run.dtype), c.to(run.dtype))
        if not keep:
            return y, end, None
        olds = torch.cat(olds, 2) if olds else h.new_empty(2, B, 0)
        acts = torch.cat(acts, 1) if acts else run.xp.new_empty(B, 0)
        return y, end, (h, c, idx, torch.tensor(counts), olds, acts)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        if len(residuals) == 3:  # kept by the dense path
            return super().backward(cell, p, extras, chunk, residuals, grad_out, grad_state)
        h_end, c_end, idx, counts, olds, acts = residuals
        K, B, H = grad_out.shape
        dtype, sdtype = grad_out.dtype, h_end.dtype
        w = p["weight_hh"]
        k = self.time_gate(cell, p, chunk, sdtype)
        mask = chunk_mask(chunk)
        h, c = h_end.clone(), c_end.clone()
        dh, dc = grad_buffers(grad_state, sdtype)
        gxp = torch.zeros(K, B, 4 * H, dtype=dtype, device=grad_out.device)
        dw = torch.zeros_like(w) if w.requires_grad else None
        dk = torch.zeros(K, H, dtype=sdtype, device=grad_out.device)
        counts = counts.tolist()
        off, aoff = idx.shape[0], acts.shape[1]
        for i in range(K - 1, -1, -1):
            # every unit's output is its new state on valid rows; open units get theirs below
            dh += grad_out[i] if mask is None else grad_out[i] * mask[i, :, None]
            n = counts[i]
            if not n:
                continue
            off, aoff = off - n, aoff - 4 * n
            units = idx[off:off + n]
            rows = self.gate_rows(units, H)
            h_o, c_o = olds[0, :, off:off + n].contiguous(), olds[1, :, off:off + n].contiguous()
            h[:, units], c[:, units] = h_o, c_o  # the state before step i
            dh_o, dc_o = dh[:, units].contiguous(), dc[:, units].contiguous()
            dgates, dk_o = common.new((B, 4 * n), sdtype, h.device), torch.empty_like(dh_o)
            lstm.lstm_backward_step(acts[:, aoff:aoff + 4 * n].contiguous(), h_o, c_o,
                                    None if mask is None else mask[i], k[i, units].contiguous(),
                                    torch.zeros_like(dh_o), dh_o, dc_o, dgates, dk_o)
            dh[:, units], dc[:, units] = dh_o, dc_o
            w_o = w[rows].to(dtype)
            dh += dgates.to(dtype) @ w_o
            gxp[i][:, rows] = dgates.to(dtype)
            dk[i, units] = dk_o.sum(0)
            if dw is not None:
                dw.index_add_(0, rows, (dgates.t().to(dtype) @ h.to(dtype)).to(w.dtype))
        grads = {"weight_hh": dw, **time_gate_grads(cell, p, chunk, k, dk)}
        return gxp, (dh.to(dtype), dc.to(dtype)), grads


def time_gate_grads(cell: GLSTMCell, p: Params, chunk: Chunk, k: Tensor, dk: Tensor) -> dict[str, Tensor]:
    """Gradients of ``mu`` and ``sigma`` from those of the chunk's time gates ``k`` (K, H):
    ``∂k/∂μ = k (t − μ)/v`` and ``∂k/∂σ = k (t − μ)² σ / v²`` with ``v = max(σ², SIGMA_MIN²)``
    (zero where the clamp holds, and where the gate is closed since k = 0 there)."""
    mu, sigma = p["mu"], p["sigma"]
    t = torch.arange(chunk.t0, chunk.t0 + k.shape[0], device=k.device, dtype=k.dtype)[:, None]
    s = sigma.to(k.dtype)
    var = s.square()
    v = var.clamp_min(SIGMA_MIN ** 2)
    d = t - mu.to(k.dtype)
    g = dk * k
    dsigma = (g * d.square() / v.square()).sum(0) * s * (var >= SIGMA_MIN ** 2)
    return {"mu": (g * d / v).sum(0).to(mu.dtype), "sigma": dsigma.to(sigma.dtype)}


def gate_bias(cell: CellSpec, p: Params) -> Tensor | None:
    """The bias vector added to the gates inside the step, if any: ``bias_gates`` (variants 1
    and 3), or the r, z rows of the reset-after GRU's ``bias_hh``."""
    if "bias_gates" in p:
        return p["bias_gates"]
    if isinstance(cell, GRUCell) and cell.reset_after and cell.bias and "x" in cell.terms:
        return p["bias_hh"][:2 * cell.hidden_size]
    return None


def bias_sums(cell: CellSpec, p: Params, dpre: Tensor, cols: dict[str, slice]) -> dict[str, Tensor | None]:
    """Gradients of the bias parameters among ``p``: each the sum over steps and rows of the
    ``dpre`` columns given for it."""
    return {name: dpre[..., cols[name]].sum((0, 1)).to(p[name].dtype) if p[name].requires_grad else None
            for name in cols if name in p}


class GRURunner(Runner):
    """torch.nn.GRU (reset-after) and its gate variants GRU1–3: one GEMM per step.

    Residuals: ``[r, z, n, ĥn]`` (K, B, 4H) in the input dtype and the float states, or those
    of :func:`revrnn.kernels.persistent.gru_forward` (three tensors) when it ran the chunk.
    """

    def __init__(self, backend: "TritonBackend") -> None:
        self.backend = backend

    def forward(self, cell, p, extras, chunk, state, keep):
        if self.backend.use_persistent(cell, chunk.xp):
            y, h, res = persistent.gru_forward(chunk.xp, p["weight_hh"], p.get("bias_hh"), *state, chunk.mask, keep)
            return y, (h.to(y.dtype),), res
        run = Steps(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        (hs,) = run.states
        w_t = p["weight_hh"].t()
        gb, bhn = gate_bias(cell, p), p["bias_hh"][-H:] if cell.bias else None
        act = run.new(K, B, 4 * H, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, H, dtype=run.dtype), run.new(B, w_t.shape[1], dtype=run.dtype)
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype), w_t, out=rec)
            gru.gru_forward_step(run.xp[i], rec, gb, bhn, hs[r], run.mask_at(i), hs[w], y[i],
                                 None if act is None else act[i])
        return y, run.end(), ((act, hs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        if len(residuals) == 3:
            w, b = p["weight_hh"], p.get("bias_hh")
            gxp, dh, dw, db = persistent.gru_backward(residuals, w, b, grad_out, *grad_state, chunk.mask,
                                                      w.requires_grad, b is not None and b.requires_grad)
            return gxp, (dh.to(gxp.dtype),), {"weight_hh": dw, **({"bias_hh": db} if b is not None else {})}
        act, hs = residuals
        K, B, H = act.shape[0], act.shape[1], cell.hidden_size
        dtype, sdtype = act.dtype, hs.dtype
        w = p["weight_hh"]
        rec = slice(0, 3 * H) if w.shape[0] == 3 * H else slice(2 * H, 3 * H)  # dpre columns of the GEMM
        mask = chunk_mask(chunk)
        (dh,) = grad_buffers(grad_state, sdtype)
        dpre = common.new((K, B, 4 * H), sdtype, act.device)
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            gru.gru_backward_step(act[i], hs[i], None if mask is None else mask[i], dy[i], dh, dpre[i])
            dh += dpre[i, :, rec].to(dtype) @ w.to(dtype)
        grads = {"weight_hh": weight_grad(dpre[..., rec], hs[:K], dtype) if w.requires_grad else None}
        grads.update(bias_sums(cell, p, dpre, {"bias_gates": slice(0, 2 * H),
                                               "bias_hh": slice(0, 3 * H) if "x" in cell.terms else slice(2 * H, 3 * H)}))
        gxp = torch.cat((dpre[..., :2 * H], dpre[..., 3 * H:]), -1) if "x" in cell.terms else dpre[..., 3 * H:]
        return gxp.to(dtype), (dh.to(dtype),), grads


class ResetBeforeRunner(Runner):
    """Reset-before gated units: the GRU with ``reset_after=False`` (NG = 2 gates) and the MGU
    (NG = 1), every gate variant; two dependent GEMMs per step.

    Residuals: ``[gates, n]`` (K, B, (NG + 1)H) in the input dtype and the float states.
    """

    @staticmethod
    def layout(cell: CellSpec, p: Params) -> tuple[int, Tensor | None, Tensor]:
        """(NG, the gates' recurrent weight or None, the candidate's recurrent weight W_n)."""
        ng = 2 if isinstance(cell, GRUCell) else 1
        w = p["weight_hh"]
        H = cell.hidden_size
        return ng, (w[:ng * H] if "h" in cell.terms else None), w[-H:]

    def forward(self, cell, p, extras, chunk, state, keep):
        run = Steps(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        ng, w_g, w_n = self.layout(cell, p)
        (hs,) = run.states
        gb = gate_bias(cell, p)
        act = run.new(K, B, (ng + 1) * H, dtype=run.dtype) if keep else None
        y, rh, rec2 = (run.new(*shape, dtype=run.dtype) for shape in ((K, B, H), (B, H), (B, H)))
        rec1 = None if w_g is None else run.new(B, ng * H, dtype=run.dtype)
        for i in range(K):
            r, w = run.rows(i)
            a = None if act is None else act[i]
            if rec1 is not None:
                torch.mm(hs[r].to(run.dtype), w_g.t(), out=rec1)
            gru.reset_gates_step(run.xp[i], rec1, gb, hs[r], rh, a, ng)
            torch.mm(rh, w_n.t(), out=rec2)
            gru.reset_update_step(run.xp[i], rec1, gb, rec2, hs[r], run.mask_at(i), hs[w], y[i], a, ng)
        return y, run.end(), ((act, hs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        act, hs = residuals
        K, B, G = act.shape
        H, dtype, sdtype = cell.hidden_size, act.dtype, hs.dtype
        ng, w_g, w_n = self.layout(cell, p)
        mask = chunk_mask(chunk)
        (dh,) = grad_buffers(grad_state, sdtype)
        dpre = common.new((K, B, G), sdtype, act.device)
        dy = grad_out.contiguous()
        for i in range(K - 1, -1, -1):
            m = None if mask is None else mask[i]
            gru.reset_update_backward(act[i], hs[i], m, dy[i], dh, dpre[i], ng)
            drh = dpre[i, :, ng * H:].to(dtype) @ w_n.to(dtype)
            gru.reset_gates_backward(act[i], hs[i], m, drh, dh, dpre[i], ng)
            if w_g is not None:
                dh += dpre[i, :, :ng * H].to(dtype) @ w_g.to(dtype)
        grads: dict[str, Tensor | None] = {"weight_hh": None}
        if p["weight_hh"].requires_grad:
            rh = act[..., :H].to(sdtype) * hs[:K]  # the candidate GEMM's operand ρ ⊙ h
            dw_n = weight_grad(dpre[..., ng * H:], rh, dtype)
            grads["weight_hh"] = dw_n if w_g is None else torch.cat((weight_grad(dpre[..., :ng * H], hs[:K], dtype), dw_n))
        grads.update(bias_sums(cell, p, dpre, {"bias_gates": slice(0, ng * H)}))
        gxp = dpre if "x" in cell.terms else dpre[..., ng * H:]
        return gxp.to(dtype), (dh.to(dtype),), grads


class LightRunner(Runner):
    """LiGRU and LiBRU (both forms): one GEMM per step on the feedback ``g(h)``.

    Residuals: the kept activations (K, B, 2H) in the input dtype and the float states.
    """

    @staticmethod
    def form(cell: CellSpec) -> int:
        """The kernels' form number (:mod:`revrnn.kernels.light`)."""
        if isinstance(cell, LiGRUCell):
            return light.LIGRU
        return light.PROBS if cell.form == "probs" else light.LOGPROBS

    def forward(self, cell, p, extras, chunk, state, keep):
        run = Steps(chunk, state, keep)
        K, B, H = run.K, run.B, cell.hidden_size
        form = self.form(cell)
        eps = log_eps(run.dtype)
        (hs,) = run.states
        w_t = p["weight_hh"].t()
        drop = extras.get("drop_mask")
        act = run.new(K, B, 2 * H, dtype=run.dtype) if keep else None
        y, rec = run.new(K, B, H, dtype=run.dtype), run.new(B, 2 * H, dtype=run.dtype)
        # form 1's GEMM operand log(max(h, 0) + ε); each step's kernel writes the next one's
        fb = safe_log(hs[0].to(run.dtype)) if form == light.PROBS else None
        for i in range(K):
            r, w = run.rows(i)
            torch.mm(hs[r].to(run.dtype) if fb is None else fb, w_t, out=rec)
            light.light_forward_step(run.xp[i], rec, hs[r], run.mask_at(i), drop, hs[w], y[i],
                                     None if act is None else act[i], fb, form, eps)
        return y, run.end(), ((act, hs) if keep else None)

    def backward(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        act, hs = residuals
        K, B, G = act.shape
        dtype, sdtype = act.dtype, hs.dtype
        form = self.form(cell)
        eps = log_eps(dtype)
        w = p["weight_hh"]
        drop = extras.get("drop_mask")
        mask = chunk_mask(chunk)
        (dh,) = grad_buffers(grad_state, sdtype)
        dpre = common.new((K, B, G), sdtype, act.device)
        dy = grad_out.contiguous()
        dfb = None  # form 1: the gradient of the feedback log(max(h, 0) + ε) of the later step
        for i in range(K - 1, -1, -1):
            light.light_backward_step(act[i], hs[i], hs[i + 1], None if mask is None else mask[i], drop, dy[i], dh,
                                      dfb, dpre[i], form, eps)
            grad_in = dpre[i].to(dtype) @ w.to(dtype)
            if form == light.PROBS:
                dfb = grad_in
            else:
                dh += grad_in
        operand = hs[:K]
        if form == light.PROBS:
            dh += dfb * (hs[0] >= 0) / (hs[0].clamp_min(0) + eps)
            operand = safe_log(hs[:K].to(dtype))
        grads = {"weight_hh": weight_grad(dpre, operand, dtype) if w.requires_grad else None}
        return dpre.to(dtype), (dh.to(dtype),), grads


def chunk_mask(chunk: Chunk) -> Tensor | None:
    """The chunk's mask as contiguous bytes for the kernels."""
    return None if chunk.mask is None else chunk.mask.to(torch.uint8).contiguous()


class TritonBackend(Backend):
    """Fused Triton kernels; see the module docstring. ``auto`` picks it on CUDA tensors only."""

    name = "triton"
    auto_devices = ("cuda",)

    def __init__(self) -> None:
        #: the persistent whole-chunk kernels of :mod:`revrnn.kernels.persistent` for torch.nn's
        #: LSTM and GRU: ``"never"`` (default until they have been measured on a GPU),
        #: ``"auto"`` (CUDA, H ≤ 128, batch ≤ :attr:`persistent_max_batch`) or ``"always"``
        #: (wherever they apply: H ≤ 128, no float64)
        self.persistent = "never"
        self.persistent_max_batch = 64
        #: g-LSTM: ``"auto"`` (sparse when at most half the chunk's unit-steps are open),
        #: ``"always"`` or ``"never"`` (dense: every unit computed, closed ones passed through)
        self.glstm_sparse = "auto"
        #: what the g-LSTM's sparse path computed and skipped, summed over runs
        self.sparse_work = SparseWork()
        self._runners: dict[type, Runner] = {
            LSTMCell: LSTMRunner(self), GLSTMCell: SparseGLSTMRunner(self), MGUCell: ResetBeforeRunner(),
            LiGRUCell: LightRunner(), LiBRUCell: LightRunner()}
        self._gru = {True: GRURunner(self), False: ResetBeforeRunner()}

    def use_persistent(self, cell: CellSpec, like: Tensor) -> bool:
        """Whether the persistent kernels run ``cell`` on tensors like ``like`` (K, B, ·)."""
        if self.persistent == "never" or like.dtype not in persistent.DTYPES:
            return False
        if type(cell) is LSTMCell:
            fits = cell.proj_size == 0
        else:
            fits = type(cell) is GRUCell and cell.reset_after and cell.variant == 0
        if not (fits and persistent.supported(cell.hidden_size)):
            return False
        return self.persistent == "always" or (like.is_cuda and like.shape[1] <= self.persistent_max_batch)

    def runner_for(self, cell: CellSpec) -> Runner | None:
        """The runner of ``cell``'s family, or None if no Triton kernels implement it (cell
        types are matched exactly: a subclass, e.g. a KAF-gated cell, changes the step)."""
        kind = type(cell)
        if kind is GRUCell:
            return self._gru[cell.reset_after]
        if kind in (LSTMCell, GLSTMCell) and cell.proj_size:
            return None
        return self._runners.get(kind)

    def availability(self, device: torch.device) -> str | None:
        return _MISSING or common.triton_reason(device)

    def supports(self, cell: CellSpec, dtype: torch.dtype) -> bool:
        return dtype in DTYPES and self.runner_for(cell) is not None

    def forward_chunk(self, cell, p, extras, chunk, state, keep):
        with torch.no_grad():
            return self.runner_for(cell).forward(cell, p, extras, chunk, state, keep)

    def backward_chunk(self, cell, p, extras, chunk, residuals, grad_out, grad_state):
        with torch.no_grad():
            return self.runner_for(cell).backward(cell, p, extras, chunk, residuals, grad_out, grad_state)
