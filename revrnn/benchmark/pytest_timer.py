"""The CPU kernel suite's timer: pytest-benchmark, run in this process on the candidates handed
in (``pytest.main`` on :mod:`.kernel_cases`, which this module's plugin parametrises). It
calibrates how many calls make a round for the clock's resolution, warms up, and reports the
median of its rounds; one candidate after the other, unlike :func:`.timing.interleave`, which
the suites with calls of milliseconds and more use."""
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


def run(candidates: list[Candidate], max_time: float, min_rounds: int) -> list[Timed]:
    """Times ``candidates`` with pytest-benchmark: at most ``max_time`` seconds each (warm-up
    included) but at least ``min_rounds`` rounds; a candidate that raises is a result with its
    error. Raises ImportError if pytest-benchmark is not installed (``pip install
    revrnn[bench]``)."""
    import pytest
    import pytest_benchmark  # noqa: F401  (a clear ImportError before pytest hides it)

    plugin = _Plugin(candidates)
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
    stats = {b["param"]: b["stats"] for b in found}
    timed = []
    for i, c in enumerate(candidates):
        s = stats.get(str(i))
        if s is None:
            tail = said.getvalue().strip().splitlines()[-1:] or ["no output"]
            timed.append(Timed(c, error=plugin.failures.get(str(i), f"not timed: {tail[0][:200]}")))
        else:  # per call, in the rounds' median; rounds is how many went into it
            timed.append(Timed(c, times_ms=[s["median"] * 1e3], rounds=s["rounds"], iterations=s["iterations"]))
    return timed
