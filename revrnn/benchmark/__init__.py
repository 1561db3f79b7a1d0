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
    "memory": (peaks.memory, "process peaks against T, each step in a fresh process: torch.nn, checkpointing, "
                             "recompute, reversible"),
    "strategies": (peaks.strategies, "time and process peak of every memory strategy at one T"),
}
#: what ``revrnn bench`` runs when no suite is named
DEFAULT = ("kernels", "sequence")


def bench(names: list[str], device: torch.device, size: str = "default", only: list[str] | None = None,
          out: Path | None = None, progress: bool = True, echo: Callable[[str], None] = print) -> list[Path]:
    """Run the suites ``names`` on ``device`` and write each one's result files into ``out``
    (default :func:`.results.results_dir`); their paths."""
    if device.type == "cuda":  # torch.nn (cuDNN) and torch's GEMMs in the arithmetic the kernels do
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    out = out or results.results_dir()
    written = []
    for name in names:
        make, _ = SUITES[name]
        info = {**results.meta(device), "suite": name, "size": size, "only": only}
        rows = run(make(device, size, only), device, progress)
        echo(f"\nrevrnn bench {name} ({size}) on {info['device']}\n{results.table(rows)}")
        written += results.write(name, rows, info, out, results.stem(name, device, size == "quick"))
    return written
