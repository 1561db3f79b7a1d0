"""``revrnn bench``: the benchmark suites, each against its strongest baselines in the same run,
and the report that renders recorded results into the README.

A suite module gives ``comparisons(device, size, only)`` (:class:`.suite.Comparison` s), at three
sizes: ``quick`` (toy shapes: a smoke test), ``default`` (a few minutes on two cores) and ``full``
(the shapes the targets are stated at). :func:`bench` runs suites and writes each one's result
(:mod:`.results`: JSON, markdown, PNG); :mod:`.report` turns result files into tables.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from . import kernels, peaks, results, sequence
from .suite import run

#: name -> (comparisons, one line for --help)
SUITES: dict[str, tuple[Callable[..., list[Any]], str]] = {
    "kernels": (kernels.comparisons, "per-step chunk calls, forward and backward apart, with the pointwise "
                                     "passes alone, against the GEMMs alone and the bytes floor"),
    "sequence": (sequence.comparisons, "a training step over a whole sequence against torch.nn, its "
                                       "checkpointing, the eager loop, torch.compile of it and the GEMM floor"),
    "memory": (peaks.memory, "process peaks against T, each step in fresh processes (the median of 3): "
                             "torch.nn, checkpointing, recompute, reversible"),
    "strategies": (peaks.strategies, "time and process peak of every memory strategy at one T"),
}
#: what ``revrnn bench`` runs when no suite is named
DEFAULT = ("kernels", "sequence")
#: the suites whose cases ``only`` picks
PICKED = ("kernels", "sequence")


def names() -> list[str]:
    """What ``only`` may name: the catalog's cases and the families' benchmark groups."""
    from ..cells import FAMILIES, cases
    return [c.name for _, c in cases()] + [g for f in FAMILIES for g in f.bench_groups]


def bench(suites: list[str], device: torch.device, size: str = "default", only: list[str] | None = None,
          out: Path | None = None, progress: bool = True, echo: Callable[[str], None] = print) -> list[Path]:
    """Run ``suites`` on ``device`` and write each one's result files into ``out``
    (default :func:`.results.results_dir`; the JSON after every comparison, so that a run cut
    short keeps what it measured); their paths. ``only`` names the cases (:func:`names`) of the
    suites that pick cases (:data:`PICKED`); ValueError for another name or suite."""
    if only:
        known = names()
        unknown = sorted(set(only) - set(known))
        if unknown:
            raise ValueError(f"--only: unknown case(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        others = [s for s in suites if s not in PICKED]
        if others:
            raise ValueError(f"--only picks the cases of {' and '.join(PICKED)}, not of {', '.join(others)}")
    if device.type == "cuda":  # torch.nn (cuDNN) and torch's GEMMs in the arithmetic the kernels do
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    out = out or results.results_dir()
    written = []
    for name in suites:
        make, _ = SUITES[name]
        info = {**results.meta(device), "suite": name, "size": size, "only": only}
        name_of = results.stem(name, device, size == "quick")
        rows = run(make(device, size, only), device, progress,
                   lambda partial: results.write_json(name, partial, info, out, name_of))
        echo(f"\nrevrnn bench {name} ({size}) on {info['device']}\n{results.table(rows)}")
        written += results.write(name, rows, info, out, name_of)
    return written
