"""What a suite is: a list of comparisons, each a few candidates timed against the first (its
baseline), built only when it runs so that one comparison's models and inputs are freed before
the next; :func:`run` times them all under one progress bar."""
from __future__ import annotations

import gc
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .timing import Candidate, interleave, rows


@dataclass
class Comparison:
    """``build()`` makes the candidates (baseline first); ``common`` goes into every row."""

    common: dict[str, Any]
    build: Callable[[], list[Candidate]]
    warmup: int = 2
    repeats: int = 5
    #: "interleave" (:func:`.timing.interleave`), "pytest" (:mod:`.pytest_timer`), or "process":
    #: ``build()`` makes :class:`revrnn.profile.process.Run` s, each measured in a fresh process
    #: (:func:`.peaks.measure`; ``repeats`` is their number)
    timer: str = "interleave"
    settings: dict[str, Any] = field(default_factory=dict)  # the timer's keywords


def run(comparisons: list[Comparison], device: torch.device, progress: bool = True,
        done: Callable[[list[dict[str, Any]]], None] = lambda rows: None) -> list[dict[str, Any]]:
    """Every comparison's rows, in order, with a progress bar over their rounds on stderr;
    ``done`` gets the rows so far after each comparison."""
    from tqdm import tqdm

    total = sum({"interleave": c.warmup + c.repeats, "pytest": 1, "process": c.repeats}[c.timer] for c in comparisons)
    out: list[dict[str, Any]] = []
    with tqdm(total=total, disable=not progress, file=sys.stderr, unit="round", leave=False) as bar:
        for c in comparisons:
            bar.set_description(str(c.common.get("case", ""))[:40])
            candidates = c.build()
            if c.timer == "process":
                from .peaks import measure
                out += measure(candidates, {**c.common, "device": device.type}, tick=lambda: bar.update(1),
                               **c.settings)
                done(out)
                continue
            if c.timer == "pytest":
                from . import pytest_timer
                timed = pytest_timer.run(candidates, **c.settings)
                bar.update(1)
            else:
                timed = interleave(candidates, c.warmup, c.repeats, device, lambda: bar.update(1))
            out += rows(timed, **c.common, device=device.type)
            done(out)
            del candidates, timed
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return out
