"""Timing done one way for every suite: candidates of one comparison interleaved in one process
(round by round, so drifting clocks and other tenants hit them alike), untimed warm-up rounds
first, the median of the timed rounds, CUDA events on a GPU, and inputs rotated between calls
(each candidate takes the call's index and picks its input from a few made beforehand, so no
call finds the previous one's data in cache). The CPU kernel suite times through pytest-benchmark
instead (:mod:`.pytest_timer`); both hand back :class:`Timed` results that :func:`rows` turns into
a suite's rows, ratios over the comparison's first candidate, its baseline."""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

#: a bound on a row's ratio over its baseline: ("<=", 1.2) or (">=", 4.0)
Target = tuple[str, float]


@dataclass
class Candidate:
    """One thing to time: ``run(i)`` does the work once on the i-th rotating input; ``steps``
    divides the time into a time per step; ``extra`` goes into its row."""

    name: str
    run: Callable[[int], Any]
    steps: int = 1
    target: Target | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Timed:
    """A candidate's timed calls in milliseconds, or why it could not run."""

    candidate: Candidate
    times_ms: list[float] = field(default_factory=list)
    error: str | None = None
    rounds: int | None = None  # pytest-benchmark: rounds behind its one median (times_ms)
    iterations: int | None = None  # pytest-benchmark: calls per round


def describe(err: BaseException) -> str:
    """Type and first line of ``err``, and of its root cause when it wraps one (Dynamo does)."""
    def line(e: BaseException) -> str:
        first = str(e).strip().splitlines()
        return f"{type(e).__name__}: {first[0]}" if first else type(e).__name__

    root, inner = err, err.__cause__ or getattr(err, "inner_exception", None)
    while inner is not None:
        root, inner = inner, inner.__cause__ or getattr(inner, "inner_exception", None)
    return (line(err) if root is err else f"{line(err)} (cause: {line(root)})")[:300]


def clock(device: torch.device) -> Callable[[Callable[[], Any]], float]:
    """A function timing one call in milliseconds: CUDA events around it on a GPU (waiting for
    the end event only), ``perf_counter`` on CPU."""
    if device.type == "cuda":
        def on_gpu(fn: Callable[[], Any]) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        return on_gpu

    def on_cpu(fn: Callable[[], Any]) -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    return on_cpu


def interleave(candidates: list[Candidate], warmup: int, repeats: int, device: torch.device,
               tick: Callable[[], None] = lambda: None) -> list[Timed]:
    """Times ``candidates`` round by round: ``warmup`` untimed rounds, then ``repeats`` timed ones.
    A candidate that raises is dropped from later rounds with its error. ``tick`` is called
    after every round (a progress bar)."""
    timed = [Timed(c) for c in candidates]
    time_one = clock(device)
    calls = 0
    for round_ in range(warmup + repeats):
        for t in timed:
            if t.error is not None:
                continue
            i = calls
            try:
                ms = time_one(lambda: t.candidate.run(i))
            except Exception as err:  # a candidate that cannot run here (OOM, unsupported) is a row with its error
                t.error, t.times_ms = describe(err), []
                continue
            if round_ >= warmup:
                t.times_ms.append(ms)
        calls += 1
        tick()
    return timed


def meets(ratio: float | None, target: Target | None) -> bool | None:
    if ratio is None or target is None:
        return None
    return ratio <= target[1] if target[0] == "<=" else ratio >= target[1]


def rows(timed: list[Timed], **common: Any) -> list[dict[str, Any]]:
    """One row per candidate: median per call and per step, the ratio of its time per step over
    the first candidate's (the baseline), its target and whether it is met; ``common`` (suite,
    case, shape, dtype, device) goes into every row."""
    def per_step(t: Timed) -> float | None:
        return statistics.median(t.times_ms) / t.candidate.steps if t.times_ms else None

    base = timed[0]
    base_step = per_step(base)
    out = []
    for t in timed:
        step = per_step(t)
        ratio = None if step is None or not base_step else step / base_step
        row = {**common, "impl": t.candidate.name, "baseline": base.candidate.name,
               "ms": None if step is None else step * t.candidate.steps, "ms_per_step": step,
               "steps": t.candidate.steps, "times_ms": t.times_ms, "ratio": ratio,
               "target": None if t.candidate.target is None else list(t.candidate.target),
               "meets": meets(ratio, t.candidate.target), **t.candidate.extra}
        if t.rounds is not None:
            row |= {"rounds": t.rounds, "iterations": t.iterations}
        if t.error is not None:
            row["error"] = t.error
        out.append(row)
    return out
