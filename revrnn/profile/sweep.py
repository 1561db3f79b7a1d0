"""``memory_sweep``: activation memory, time and gradient error per (strategy, T)."""
from __future__ import annotations

import math
import platform
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .. import __version__
from ..cells import FAMILIES
from ..nn import MODULES
from ..nn.base import RecurrentBase
from ..schedule import default_every
from .strategy import Strategy
from .track import MiB, track

#: What ``saved_*`` columns measure (stated in every output; see specs/memory.md §8.8).
ACCOUNTING = ("storages saved for backward by autograd and revrnn (pack hook), each counted once; "
              "parameters and inputs excluded; live peak over forward + backward")

#: command-line name -> that of its reversible counterpart (from the catalog)
REVERSIBLE_OF = {k: v for family in FAMILIES for k, v in family.reversible_of.items()}


def cell_factory(cell: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 backend: str = "auto") -> Callable[[Strategy], nn.Module]:
    """A ``make_model`` for :func:`memory_sweep` from a cell name of :data:`revrnn.nn.MODULES`.

    ``reversible`` runs the reversible counterpart that the catalog names (``reversible_of``); its
    gradient error is measured against that cell's own ``store``.
    """
    if cell not in MODULES:
        raise ValueError(f"cell must be one of {', '.join(sorted(MODULES))}, got {cell!r}")

    def make(strategy: Strategy) -> nn.Module:
        name = cell
        if strategy.kind == "reversible":
            if cell not in REVERSIBLE_OF:
                names = sorted(REVERSIBLE_OF)
                raise ValueError(f"strategy 'reversible' needs cell {', '.join(names[:-1])} or {names[-1]}, got {cell!r}")
            name = REVERSIBLE_OF[cell]
        cls = MODULES[name]
        kwargs = strategy.module_kwargs()
        if kwargs["memory"] not in cls.memory_modes:
            raise ValueError(f"strategy {strategy.name!r} is not available for {cls.__name__} "
                             f"(memory modes: {', '.join(cls.memory_modes)})")
        return cls(input_size, hidden_size, num_layers=num_layers, backend=backend, **kwargs)

    return make


@dataclass
class Row:
    """One (strategy, T) measurement; sizes in bytes, times in milliseconds."""

    strategy: str
    T: int
    batch: int
    model: str
    saved_bytes: int | None = None  # held for backward when the (last) forward ends
    saved_peak_bytes: int | None = None
    peak_delta_bytes: int | None = None  # CUDA only
    peak_reserved_bytes: int | None = None  # CUDA only
    input_bytes: int = 0
    theory_bytes: float | None = None
    fwd_ms: float | None = None
    bwd_ms: float | None = None
    step_ms: float | None = None
    time_vs_bptt: float | None = None
    step_evaluations: float | None = None  # per step, from the schedule (BPTT = 1)
    grad_rel_err_vs_bptt: float | None = None
    truncation: int | None = None
    oom: bool = False
    note: str = ""


@dataclass
class Report:
    """The rows of a sweep and how they were measured; see :func:`memory_sweep`."""

    rows: list[Row]
    env: dict[str, Any] = field(default_factory=dict)

    def strategies(self) -> list[str]:
        return list(dict.fromkeys(r.strategy for r in self.rows))

    @property
    def cuda(self) -> bool:
        return self.env.get("device", "cpu").startswith("cuda")

    def memory(self, row: Row) -> int | None:
        """The memory this report plots: CUDA peak delta on CUDA, accounted peak otherwise."""
        return row.peak_delta_bytes if self.cuda else row.saved_peak_bytes

    def slopes(self) -> dict[str, float]:
        """Per strategy, the slope of log(memory) against log(T) (least squares, ≥ 2 points)."""
        out = {}
        for name in self.strategies():
            done = [r for r in self.rows if r.strategy == name and not r.oom and self.memory(r)]
            if len({r.T for r in done}) >= 2:
                slope, _ = np.polyfit(np.log([r.T for r in done]), np.log([self.memory(r) for r in done]), 1)
                out[name] = float(slope)
        return out

    def advice(self) -> list[str]:
        """Which strategy to pick, read off the largest T every exact strategy ran at."""
        exact = [r for r in self.rows if r.truncation is None and not r.oom and self.memory(r)]
        if not exact:
            return ["no exact strategy completed"]
        T = max(r.T for r in exact)
        at = sorted((r for r in exact if r.T == T), key=self.memory)
        lines = [f"At T={T}, exact strategies from least to most memory:"]
        for r in at:
            t = f", {r.time_vs_bptt:.2f}x BPTT time" if r.time_vs_bptt is not None else ""
            lines.append(f"  {r.strategy:<14} {self.memory(r) / MiB:10.4g} MiB{t}")
        lines.append("Pick the fastest one whose memory fits your budget at your T; the slopes say how it grows.")
        truncated = [r for r in self.rows
                     if r.truncation is not None and r.T > r.truncation and r.grad_rel_err_vs_bptt is not None]
        if truncated:
            worst = max(truncated, key=lambda r: r.grad_rel_err_vs_bptt)
            lines.append(f"{worst.strategy} is cheap but biased: gradient error {worst.grad_rel_err_vs_bptt:.2g} "
                         f"vs BPTT at T={worst.T}.")
        return lines

    def table(self) -> str:
        """A fixed-width table, MiB = 2^20 bytes, with the fitted slopes and the advice."""
        mem = "peak delta (MiB)" if self.cuda else "saved peak (MiB)"
        head = (f"{'strategy':<14} {'T':>7} {mem:>17} {'theory (MiB)':>13} {'fwd ms':>9} {'bwd ms':>9} "
                f"{'vs BPTT':>8} {'evals/step':>10} {'grad err vs BPTT':>17}")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            if r.oom:
                lines.append(f"{r.strategy:<14} {r.T:>7} {'OOM':>17}  {r.note}")
                continue
            m = self.memory(r)
            err = (f"{r.grad_rel_err_vs_bptt:.1e}" if r.grad_rel_err_vs_bptt is not None else "-")
            if r.truncation is not None and r.grad_rel_err_vs_bptt is not None:
                err = f"{err} (trunc.)"
            lines.append(
                f"{r.strategy:<14} {r.T:>7} {_fmt(m and m / MiB, 17, 4, 'g')} "
                f"{_fmt(r.theory_bytes and r.theory_bytes / MiB, 13, 4, 'g')} "
                f"{_fmt(r.fwd_ms, 9, 1)} {_fmt(r.bwd_ms, 9, 1)} {_fmt(r.time_vs_bptt, 8, 2)} "
                f"{_fmt(r.step_evaluations, 10, 2)} {err:>17}")
        slopes = self.slopes()
        if slopes:
            lines.append("log-log slope of memory vs T: " + ", ".join(f"{k} {v:.2f}" for k, v in slopes.items()))
        lines.append(f"memory: {self.env.get('memory_method', ACCOUNTING)}")
        return "\n".join(lines + self.advice())

    def to_dicts(self) -> list[dict[str, Any]]:
        return [dict(vars(r)) for r in self.rows]

    def to_csv(self, path) -> None:
        import csv
        rows = self.to_dicts()
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else list(Row.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(rows)

    def to_json(self, path) -> None:
        import json
        with open(path, "w") as f:
            json.dump({"env": self.env, "slopes": self.slopes(), "rows": self.to_dicts()}, f, indent=1)

    def plot(self, path, title: str | None = None) -> None:
        from .plot import plot_report
        plot_report(self, path, title)


def _fmt(value: float | None, width: int, digits: int, kind: str = "f") -> str:
    return f"{value:>{width}.{digits}{kind}}" if value is not None else f"{'-':>{width}}"


def _is_oom(error: BaseException) -> bool:
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and ("out of memory" in str(error) or "can't allocate memory" in str(error)))


def _as_tuple(state) -> tuple[Tensor, ...]:
    return (state,) if isinstance(state, Tensor) else tuple(state)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _train_step(model: nn.Module, x: Tensor, cot: dict, strategy: Strategy, device: torch.device,
                on_forward: Callable[[], None] = lambda: None) -> tuple[float, float]:
    """One forward and backward of the loss Σ_t <g_t, out_t> + <g_h, h_T> (fixed random
    cotangents, so no loss tensors of size T are saved); truncated BPTT runs one backward per
    window with the state carried detached. Returns (forward s, backward s)."""
    windows = [(0, x.shape[0])] if strategy.kind != "tbptt" else \
        [(s, min(s + strategy.k, x.shape[0])) for s in range(0, x.shape[0], strategy.k)]
    fwd = bwd = 0.0
    state = None
    for i, (s, e) in enumerate(windows):
        _sync(device)
        t0 = time.perf_counter()
        out, final = model(x[s:e], state)
        final = _as_tuple(final)
        if "out" not in cot:  # first run: draw the cotangents, the same for every strategy
            g = torch.Generator().manual_seed(cot["seed"])
            cot["out"] = torch.randn((x.shape[0], *out.shape[1:]), generator=g).to(out)
            cot["state"] = [torch.randn(h.shape, generator=g).to(h) for h in final]
        last = i == len(windows) - 1
        tensors, grads = [out], [cot["out"][s:e]]
        if last:
            tensors += [h for h in final if h.requires_grad]
            grads += [g for g, h in zip(cot["state"], final) if h.requires_grad]
        _sync(device)
        t1 = time.perf_counter()
        if last:
            on_forward()
        torch.autograd.backward(tensors, grads)
        _sync(device)
        fwd, bwd = fwd + t1 - t0, bwd + time.perf_counter() - t1
        state = tuple(h.detach() for h in final)
        state = state[0] if len(state) == 1 else state
    return fwd, bwd


def _grads(model: nn.Module) -> Tensor:
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def _state_bytes(model: nn.Module, batch: int, dtype: torch.dtype) -> int | None:
    """Bytes of one step's state over all layers and directions, for the theory column."""
    if not isinstance(model, RecurrentBase):
        return None
    sizes = sum(model.state_sizes) * model.num_layers * model.num_directions
    return sizes * batch * torch.empty((), dtype=dtype).element_size()


def _theory(strategy: Strategy, T: int, per_step: float | None, state: int | None) -> float | None:
    """Expected memory from BPTT's bytes per step (fitted at the sweep's first T) and the state
    size; for ``revolve`` an upper bound (slots plus two steps' residuals)."""
    if per_step is None:
        return None
    if strategy.kind == "bptt":
        return per_step * T
    if strategy.kind == "tbptt":
        return per_step * min(strategy.k, T)
    if state is None:
        return None
    if strategy.kind == "ckpt":
        K = strategy.k or default_every(T)
        return state * math.ceil(T / K) + per_step * min(K, T)
    if strategy.kind == "revolve":
        return state * min(strategy.k, T) + 2 * per_step
    return None


def environment(device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    env = {"revrnn": __version__, "torch": torch.__version__, "python": platform.python_version(),
           "platform": platform.platform(), "device": str(device), "dtype": str(dtype).replace("torch.", ""),
           "threads": torch.get_num_threads(), "memory_method": ACCOUNTING}
    if device.type == "cuda":
        import os
        env.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                   cudnn=torch.backends.cudnn.version(),
                   allocator_conf=os.environ.get("PYTORCH_CUDA_ALLOC_CONF", ""),
                   memory_method="CUDA max_memory_allocated() − allocation before the step; " + ACCOUNTING)
    else:
        env["cpu"] = platform.processor() or platform.machine()
    return env


def memory_sweep(make_model: Callable[[Strategy], nn.Module], seq_lens: Sequence[int], batch_size: int,
                 input_size: int, strategies: Iterable[Strategy | str] = ("bptt", "ckpt:sqrt"),
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 repeats: int = 1, seed: int = 0, progress: Callable[[Iterable], Iterable] | None = None) -> Report:
    """Train one step per (strategy, T) and measure its memory, time and gradient.

    Args:
        make_model: returns a fresh model for a strategy (e.g. :func:`cell_factory`); called
            with the same seed every time, so every strategy starts from the same weights.
            The model maps (T, B, input_size) input and an optional state to (output, state).
        seq_lens: sequence lengths T.
        strategies: :class:`Strategy` objects or their text form (``"tbptt:50"``...).
        repeats: timed runs after the accounted run; times are their median and the CUDA
            peak their maximum. The accounted run doubles as warm-up.
        progress: wraps the iterable of configurations, e.g. ``tqdm.tqdm``.

    Per row: memory held for backward (``saved_bytes`` at the end of the forward,
    ``saved_peak_bytes`` over forward and backward; parameters and inputs excluded, shared
    storages counted once), on CUDA ``peak_delta_bytes`` above the allocation before the
    step, forward/backward time, ``time_vs_bptt`` at the same T, the schedule's step
    evaluations, and the relative error of the parameter gradients against BPTT at the same T
    (the largest absolute difference over the largest absolute BPTT gradient; for
    ``reversible`` the reference is the reversible cell's own ``store``). Truncated BPTT rows
    carry ``truncation=k``: their error is the bias of truncation. Out-of-memory is recorded
    as ``oom=True`` and larger T are then not attempted for that strategy.
    """
    strategies = [s if isinstance(s, Strategy) else Strategy.parse(s) for s in strategies]
    if not strategies:
        raise ValueError("strategies must not be empty")
    names = [s.name for s in strategies]
    if len(set(names)) != len(names):
        raise ValueError(f"strategies must be distinct, got {names}")
    seq_lens = list(seq_lens)
    if not seq_lens or any(not isinstance(T, int) or isinstance(T, bool) or T < 1 for T in seq_lens):
        raise ValueError(f"seq_lens must be a non-empty list of positive ints, got {seq_lens!r}")
    for name, value in (("batch_size", batch_size), ("input_size", input_size), ("repeats", repeats)):
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "repeats" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'repeats' else 'positive'} int, got {value!r}")
    device = torch.device(device)
    seq_lens = sorted(set(seq_lens))
    configs = [(T, s) for T in seq_lens for s in strategies]
    reference: dict[tuple[int, str], Tensor] = {}  # (T, model class) -> BPTT gradient
    failed: set[str] = set()
    rows: list[Row] = []
    state_bytes: dict[int, int | None] = {}

    def build(strategy: Strategy) -> nn.Module:
        torch.manual_seed(seed)
        return make_model(strategy).to(device=device, dtype=dtype).train()

    def inputs(T: int) -> tuple[Tensor, dict]:
        g = torch.Generator().manual_seed(seed + T)
        return torch.randn(T, batch_size, input_size, generator=g).to(device=device, dtype=dtype), {"seed": seed + T}

    def reference_grad(T: int, strategy: Strategy, model: nn.Module) -> Tensor:
        key = (T, type(model).__name__)
        if key not in reference:  # the same model class trained with full BPTT
            base = build(strategy)
            base.memory = "store"
            for attr in ("checkpoint_every", "checkpoint_slots"):
                if hasattr(base, attr):
                    setattr(base, attr, None)
            x, cot = inputs(T)
            _train_step(base, x, cot, Strategy.bptt(), device)
            reference[key] = _grads(base)
        return reference[key]

    for T, strategy in (progress(configs) if progress else configs):
        model = build(strategy)
        row = Row(strategy.name, T, batch_size, type(model).__name__,
                  truncation=strategy.k if strategy.kind == "tbptt" else None)
        rows.append(row)
        if strategy.name in failed:
            row.oom, row.note = True, "not run: a shorter T ran out of memory"
            continue
        x, cot = inputs(T)
        row.input_bytes = x.numel() * x.element_size()
        try:
            with track(device, exclude=[model, x]) as m:
                _train_step(model, x, cot, strategy, device,
                            on_forward=lambda: setattr(row, "saved_bytes", m.saved_bytes))
            row.saved_peak_bytes = m.saved_peak_bytes
            grad = _grads(model)
            times, peaks = [], []
            for _ in range(repeats):
                model.zero_grad(set_to_none=True)
                with track(device) as clean:
                    times.append(_train_step(model, x, cot, strategy, device))
                peaks.append(clean.peak_delta_bytes)
                row.peak_reserved_bytes = clean.peak_reserved_bytes
            if device.type == "cuda" and peaks:
                row.peak_delta_bytes = max(peaks)
            if times:
                row.fwd_ms = 1e3 * statistics.median(t[0] for t in times)
                row.bwd_ms = 1e3 * statistics.median(t[1] for t in times)
                row.step_ms = 1e3 * statistics.median(sum(t) for t in times)
            ref = grad if strategy.kind == "bptt" else reference_grad(T, strategy, model)
            if strategy.kind == "bptt":
                reference[(T, type(model).__name__)] = grad
            row.grad_rel_err_vs_bptt = ((grad - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
        except Exception as error:  # noqa: BLE001 - only out-of-memory is a result
            if not _is_oom(error):
                raise
            row.oom, row.note = True, f"out of memory: {str(error).splitlines()[0][:120]}"
            failed.add(strategy.name)
            del error
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        cost = model.checkpoint_schedule(T) if isinstance(model, RecurrentBase) else None
        # reversible: the forward, then one gate evaluation per step while reconstructing
        row.step_evaluations = cost.factor if cost is not None else 2.0 if strategy.kind == "reversible" else 1.0
        state_bytes[id(row)] = _state_bytes(model, batch_size, dtype)
    report = Report(rows, environment(device, dtype) | {
        "batch": batch_size, "input_size": input_size, "seq_lens": seq_lens, "strategies": names, "repeats": repeats})
    bptt = {r.T: r for r in rows if r.strategy == "bptt" and not r.oom}
    per_step = report.memory(bptt[min(bptt)]) / min(bptt) if bptt else None
    for r, strategy in zip(rows, [s for _ in seq_lens for s in strategies]):
        if r.step_ms is not None and r.T in bptt and bptt[r.T].step_ms:
            r.time_vs_bptt = r.step_ms / bptt[r.T].step_ms
        if not r.oom:
            r.theory_bytes = _theory(strategy, r.T, per_step, state_bytes[id(r)])
    return report
