"""The CPU kernel suite's timer: pytest-benchmark, run in this process on the candidates handed
in (``pytest.main`` on :mod:`.kernel_cases`, which this module's plugin parametrises). It
calibrates how many calls make a round for the clock's resolution, warms up, and reports the
median of its rounds. It times one candidate after the other, so a slow stretch of a shared
machine would land on one candidate: the session runs in a few passes over every candidate, and
a candidate's time is the median of its passes' medians (:func:`.timing.interleave`, which the
suites with calls of milliseconds and more use, interleaves every call instead)."""
from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .timing import Candidate, Timed

CASES = Path(__file__).with_name("kernel_cases.py")


class _Plugin:
    """Gives :mod:`.kernel_cases` its candidates and keeps each one's failure."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.failures: dict[str, str] = {}

    def pytest_generate_tests(self, metafunc: Any) -> None:
        if "candidate" in metafunc.fixturenames:
            metafunc.parametrize("candidate", self.candidates, ids=[str(i) for i in range(len(self.candidates))])

    def pytest_runtest_logreport(self, report: Any) -> None:
        if report.failed and report.when == "call":
            lines = str(report.longrepr).strip().splitlines()
            self.failures[report.nodeid.rsplit("[", 1)[-1].rstrip("]")] = (lines[-1] if lines else "failed")[:300]


def run(candidates: list[Candidate], max_time: float, min_rounds: int, passes: int = 1) -> list[Timed]:
    """Times ``candidates`` with pytest-benchmark in ``passes`` passes over all of them, each
    pass at most ``max_time / passes`` seconds per candidate (warm-up included) but at least
    ``min_rounds / passes`` rounds (2 at least); a candidate that raises is a result with its
    error. Raises ImportError if pytest-benchmark is not installed (``pip install
    revrnn[bench]``)."""
    import pytest_benchmark  # noqa: F401  (a clear ImportError before pytest hides it)

    medians: list[list[float]] = [[] for _ in candidates]
    rounds, iterations = [0] * len(candidates), [0] * len(candidates)
    plugin = _Plugin(candidates)
    said = ""
    for _ in range(passes):
        stats, said = _session(plugin, max_time / passes, max(2, -(-min_rounds // passes)))
        for i in range(len(candidates)):
            s = stats.get(str(i))
            if s is not None:  # per call, the median of the pass's rounds
                medians[i].append(s["median"] * 1e3)
                rounds[i] += s["rounds"]
                iterations[i] = s["iterations"]
    timed = []
    for i, c in enumerate(candidates):
        if len(medians[i]) < passes:  # failed in some pass: its error
            tail = said.strip().splitlines()[-1:] or ["no output"]
            timed.append(Timed(c, error=plugin.failures.get(str(i), f"not timed: {tail[0][:200]}")))
        else:
            timed.append(Timed(c, times_ms=medians[i], rounds=rounds[i], iterations=iterations[i]))
    return timed


def _session(plugin: _Plugin, max_time: float, min_rounds: int) -> tuple[dict[str, Any], str]:
    """One pytest-benchmark session over the plugin's candidates: their stats by index, and
    what pytest printed."""
    import pytest

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "benchmark.json"
        args = [str(CASES), "-q", "-p", "no:cacheprovider", "-o", "addopts=", "--rootdir", tmp,
                "-W", "ignore::pytest_benchmark.logger.PytestBenchmarkWarning",
                f"--benchmark-json={out}", f"--benchmark-max-time={max_time}",
                f"--benchmark-min-rounds={min_rounds}", "--benchmark-warmup=on",
                "--benchmark-warmup-iterations=3", "--benchmark-disable-gc", "--benchmark-quiet"]
        cwd, said = os.getcwd(), io.StringIO()
        try:
            with contextlib.redirect_stdout(said):  # pytest's own report: the suite prints its table
                pytest.main(args, plugins=[plugin])
        finally:
            os.chdir(cwd)
        found = json.loads(out.read_text())["benchmarks"] if out.exists() else []
    return {b["param"]: b["stats"] for b in found}, said.getvalue()
