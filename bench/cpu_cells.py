"""Speed of revrnn's compiled CPU executor (``backend="cpu"``) against its baselines, forward +
backward: the catalog's cases that torch.nn also implements (``Case.baseline``) against torch.nn,
and its benchmark cases (``Case.bench``) that the executor runs against the eager loop.

Each row times one training step, ``loss = out.sum() + Σ final states; loss.backward()``, with
the input requiring grad. The candidates of one shape run interleaved in one process: after
``--warmup`` untimed rounds, each of ``--repeats`` rounds times every candidate once, and the
row reports the median; ``ratio`` is its median over the baseline's (ratio 1). Candidates:

* ``torch.nn`` — the baseline where torch.nn has the cell (oneDNN/MKL inside torch);
* ``revrnn cpu`` — the executor: per step one BLAS GEMM and one fused pointwise pass in C++;
* ``revrnn reference`` — revrnn's eager loop of the same cell (torch ops per step, iterating
  with ``unbind``), the baseline of the cells torch.nn does not have;
* ``GEMM floor`` — the same GEMMs alone in torch (the input projection and its two backward
  GEMMs, one recurrent GEMM per step forward and one backward, the recurrent weight's gradient
  over the sequence): what the executor's time would be if its pointwise passes were free.

Targets (2-core machine): against torch.nn, revrnn cpu ≤ 1.0 at B=32 I=H=256 T=200 and ≤ 1.2 at
B=1 H=64 (per step); against the eager loop, ≤ 0.2 (5× faster), measured at both shapes.

    python bench/cpu_cells.py [--threads 2] [--repeats 7] [--out file.json]

The JSON (default ``bench/results/cpu_<machine>.json``) holds every time, the machine, the
versions and the commit.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py, also when loaded from a file
from report import ROOT, align, commit  # noqa: E402
#: (T, B, I, H): the issue's large shape and the per-step one
SHAPES = ((200, 32, 256, 256), (200, 1, 64, 64))
QUICK = ((6, 3, 5, 7),)
TARGET = {(200, 32, 256, 256): 1.0, (200, 1, 64, 64): 1.2}
EAGER_TARGET = 0.2


def states(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def training_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        out, state = model(x)
        (out.sum() + sum(s.sum() for s in states(state))).backward()
    return step


def gemm_floor(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """The GEMMs of one training step of ``model``'s first layer, alone."""
    w_ih, w_hh = model.weight_ih_l0.detach(), model.weight_hh_l0.detach()
    T, B, I = x.shape
    G, H = w_hh.shape
    xs, h, g = x.detach().reshape(T * B, I), torch.randn(B, H), torch.randn(B, G)
    dxp = torch.randn(T * B, G)
    hs = torch.randn(T * B, H)

    def step() -> None:
        torch.mm(xs, w_ih.t())  # the projection
        for _ in range(T):
            torch.mm(h, w_hh.t())  # forward: h W_hh^T
            torch.mm(g, w_hh)  # backward: d rec W_hh
        torch.mm(dxp.t(), hs)  # d W_hh
        torch.mm(dxp.t(), xs)  # d W_ih
        torch.mm(dxp, w_ih)  # d x
    return step


def measure(case, shape: tuple[int, int, int, int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every candidate of ``case`` at ``shape``, interleaved; the first is the baseline."""
    T, B, I, H = shape
    torch.manual_seed(0)
    x = torch.randn(T, B, I, requires_grad=True)
    models: dict[str, nn.Module] = {}
    if case.baseline:
        models["torch.nn"] = case.make_baseline(I, H)
    for backend in ("cpu", "reference") if case.baseline else ("reference", "cpu"):
        models[f"revrnn {backend}"] = case.make(I, H, backend=backend)
    state = next(iter(models.values())).state_dict()
    for m in models.values():
        m.load_state_dict(state)
    candidates = {name: training_step(m, x) for name, m in models.items()}
    if case.baseline:
        candidates["GEMM floor"] = gemm_floor(models["torch.nn"], x)
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(args.warmup + args.repeats):
        for name, step in candidates.items():
            t0 = time.perf_counter()
            step()
            if round_ >= args.warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    first = next(iter(times))
    base = statistics.median(times[first])
    rows = []
    for name, ts in times.items():
        ms = statistics.median(ts)
        target = None
        if name == "revrnn cpu":
            target = TARGET.get(shape) if case.baseline else EAGER_TARGET
        rows.append({"case": case.bench or case.name, "baseline": first, "T": T, "B": B, "I": I, "H": H,
                     "impl": name, "ms": ms, "us_per_step": ms / T * 1e3, "ratio": ms / base, "times_ms": ts,
                     "target": target, "meets": None if target is None else ms / base <= target})
        print(f"  {case.name:10} T={T} B={B} I={I} H={H}  {name:18} {ms:9.2f} ms  {ms / base:6.2f}x",
              file=sys.stderr, flush=True)
    return rows


def eager_cases() -> list:
    """The catalog's benchmark cases without a torch.nn twin that the executor runs."""
    from revrnn.backends import get_backend
    from revrnn.cells import cases

    cpu = get_backend("cpu", torch.device("cpu"))
    out = []
    for _, case in cases(bench=True, baseline=None):
        module = case.make(8, 8)
        if "reversible" not in module.memory_modes and cpu.supports(module.cells[0], torch.float32):
            out.append(case)
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "T", "B", "I", "H", "impl", "ms", "µs/step", "ratio", "target"]  # ratio: over the first row
    lines = [[r["case"], str(r["T"]), str(r["B"]), str(r["I"]), str(r["H"]), r["impl"], f"{r['ms']:.2f}",
              f"{r['us_per_step']:.1f}", f"{r['ratio']:.2f}",
              "" if r["target"] is None else f"<= {r['target']:g} {'ok' if r['meets'] else 'MISS'}"] for r in rows]
    return align(head, lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds, median reported (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--quick", action="store_true", help="one toy shape, 1 warmup, 2 repeats (smoke test)")
    ap.add_argument("--out", type=Path, help="JSON path (default: bench/results/cpu_<machine>[_quick].json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats = 1, 2
    torch.set_num_threads(args.threads)

    import revrnn
    from revrnn.cells import cases

    reason = revrnn.available_backends()["cpu"]
    if reason is not None:
        raise SystemExit(f"backend 'cpu' is unavailable: {reason}")
    machine = platform.processor() or platform.machine()
    print(f"cpu {machine}, {torch.get_num_threads()} threads", file=sys.stderr)
    rows = [row for _, case in cases(baseline=True, bench=None)
            for shape in (QUICK if args.quick else SHAPES) for row in measure(case, shape, args)]
    rows += [row for case in eager_cases() for shape in (QUICK if args.quick else SHAPES)
             for row in measure(case, shape, args)]
    print(table(rows))
    print("ratio: median time over the baseline's (the case's first row) in the same rounds")

    slug = re.sub(r"[^a-z0-9]+", "-", machine.lower()).strip("-")
    out = args.out or ROOT / "bench" / "results" / f"cpu_{slug}{'_quick' if args.quick else ''}.json"
    meta = {"machine": machine, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "revrnn": revrnn.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            **commit(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
