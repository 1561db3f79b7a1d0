"""The ``memory`` and ``strategies`` suites: training steps in fresh processes
(:mod:`revrnn.profile.process`), each reporting its process peak above its baseline (RSS on CPU,
the allocator's peak on a GPU) beside revrnn's accounting and the median step time (AdamW steps).

* ``memory`` — peak against T for a GRU: torch.nn (the baseline, ratio 1 at each T), torch.nn
  with ``torch.utils.checkpoint`` over ⌈√T⌉-step chunks, revrnn's GRU recomputing from √T kept
  states, and RevGRU reversible (forget_bits 0 and 3);
* ``strategies`` — every strategy at one T, B=16 I=64 H=128: torch.nn and its checkpointing,
  revrnn's GRU with ``store``, ``recompute``, ``revolve`` (8 kept states), the streamed loss
  (1000-step chunks, generated input), and RevGRU ``reversible``, plain and streamed.

Ratios are over the comparison's first row (torch.nn at the same T): of the peak, and the step
time in ``time_ratio``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch

from .suite import Comparison

SIZES = dict(batch=16, input_size=64, hidden=128)
LENGTHS = {"quick": (30,), "default": (1000, 10_000), "full": (1000, 10_000, 100_000)}
STRATEGIES_T = {"quick": 30, "default": 10_000, "full": 100_000}
STEPS = {"quick": 1, "default": 2, "full": 3}
#: fresh processes per run, the median peak reported (revrnn.profile.process.measure: the resident
#: set's peak varies from process to process with glibc's heap)
REPEATS = {"quick": 1, "default": 3, "full": 3}


def sizes(T: int, steps: int, device: torch.device) -> dict[str, Any]:
    """What every run of both suites shares."""
    return dict(T=T, steps=steps, device=device.type, threads=torch.get_num_threads(), **SIZES)


def memory_runs(T: int, steps: int, device: torch.device) -> list[Any]:
    from ..profile.process import Run

    kw = sizes(T, steps, device)
    return [Run("torch.GRU", "bptt", **kw), Run("torch.GRU", "ckpt", **kw), Run("gru", "ckpt", **kw),
            Run("revgru", "reversible", forget_bits=0, **kw), Run("revgru", "reversible", forget_bits=3, **kw)]


def strategy_runs(T: int, steps: int, device: torch.device) -> list[Any]:
    from ..profile.process import Run

    kw = sizes(T, steps, device)
    chunk = min(1000, T)
    return [Run("torch.GRU", "bptt", **kw), Run("torch.GRU", "ckpt", **kw), Run("gru", "bptt", **kw),
            Run("gru", "ckpt", **kw), Run("gru", "revolve:8", **kw),
            Run("gru", "ckpt", stream=True, chunk=chunk, generated=True, **kw),
            Run("revgru", "reversible", forget_bits=3, **kw),
            Run("revgru", "reversible", forget_bits=3, stream=True, chunk=chunk, generated=True, **kw)]


def measure(runs: list[Any], common: dict[str, Any], timeout: float, tick: Callable[[], None],
            repeats: int = 1) -> list[dict[str, Any]]:
    """Each run in ``repeats`` fresh processes (the median peak); rows with peaks, ratios over the
    first run."""
    from ..profile.process import measure as in_process

    peaks = []
    for run in runs:
        peaks.append(in_process(run, timeout=timeout, repeats=repeats))
        tick()
    base = peaks[0]
    rows = []
    for p in peaks:
        mib = None if p.peak_bytes is None else p.peak_bytes / 2 ** 20
        row = {**common, "impl": p.run.name, "baseline": base.run.name, "T": p.run.T, "B": p.run.batch,
               "I": p.run.input_size, "H": p.run.hidden, "dtype": p.run.dtype, "columns": "peaks",
               "peak_mib": mib, "baseline_mib": None if p.baseline_bytes is None else p.baseline_bytes / 2 ** 20,
               "accounted_mib": None if p.saved_peak_bytes is None else p.saved_peak_bytes / 2 ** 20,
               "ms": None if p.step_s is None else p.step_s * 1e3, "oom": p.oom,
               "ratio": None if p.peak_bytes is None or not base.peak_bytes else p.peak_bytes / base.peak_bytes,
               "time_ratio": None if p.step_s is None or not base.step_s else p.step_s / base.step_s,
               "target": None, "meets": None, "method": p.method}
        if "peaks_bytes" in p.extra:
            row["peak_mib_each"] = [b / 2 ** 20 for b in p.extra["peaks_bytes"]]
        if p.buffer_bits_per_element_step is not None:
            row["buffer_bits_per_element_step"] = p.buffer_bits_per_element_step
        if p.error:
            row["error"] = p.error
        rows.append(row)
    return rows


def comparison(suite: str, runs: list[Any], timeout: float, repeats: int) -> Comparison:
    """A comparison of ``runs`` (cheap to make: each runs in its own processes when measured)."""
    return Comparison(dict(suite=suite, case=f"GRU T={runs[0].T} B=16 I=64 H=128"), lambda: runs, 0, len(runs),
                      "process", dict(timeout=timeout, repeats=repeats))


def memory(device: torch.device, size: str, only: list[str] | None = None) -> list[Comparison]:
    """The ``memory`` suite at ``size`` (``only`` does not apply: its runs are fixed)."""
    return [comparison("memory", memory_runs(T, STEPS[size], device), 600.0 * max(1, math.log10(T) - 3),
                       REPEATS[size]) for T in LENGTHS[size]]


def strategies(device: torch.device, size: str, only: list[str] | None = None) -> list[Comparison]:
    """The ``strategies`` suite at ``size`` (``only`` does not apply: its runs are fixed)."""
    return [comparison("strategies", strategy_runs(STRATEGIES_T[size], STEPS[size], device), 900.0, REPEATS[size])]
