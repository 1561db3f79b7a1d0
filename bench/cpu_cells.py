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

A family's own CPU groups run last (``Family.bench_groups`` with a ``<group>_cpu`` function in
its bench module: the g-LSTM's sparse path against its dense one, target dense ≥ 4× sparse).

The reversible cells (RevGRU, RevLSTM, ``memory="reversible"``) run at T=10⁴ B=16 I=64 H=128
against torch.nn's twin of the cell they are the reversible counterpart of (the catalog's
``reversible_of``: GRU, LSTM), target ≤ 1.5, with their eager loop (the reference backend) beside
them; ``--reversible-repeats`` rounds (default 3), one warm-up.

    python bench/cpu_cells.py [--threads 2] [--repeats 7] [--only rev kaf] [--out file.json]

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
REVERSIBLE_SHAPE, REVERSIBLE_QUICK = (10_000, 16, 64, 128), (20, 3, 5, 8)
REVERSIBLE_TARGET = 1.5


def states(state) -> tuple[torch.Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def training_step(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        out, state = model(x)
        (out.sum() + sum(s.sum() for s in states(state))).backward()
    return step


def gemm_floor(model: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """The GEMMs of one training step of ``model``'s first layer, alone (with ``proj_size``,
    the projection's too: per step m W_hr^T forward and d h W_hr backward, and d W_hr)."""
    w_ih, w_hh = model.weight_ih_l0.detach(), model.weight_hh_l0.detach()
    w_hr = getattr(model, "weight_hr_l0", None)
    T, B, I = x.shape
    G, P = w_hh.shape  # P: h's size, the hidden size unless projected
    xs, h, g = x.detach().reshape(T * B, I), torch.randn(B, P), torch.randn(B, G)
    dxp = torch.randn(T * B, G)
    hs = torch.randn(T * B, P)
    if w_hr is not None:
        w_hr = w_hr.detach()
        m, ms = torch.randn(B, w_hr.shape[1]), torch.randn(T * B, w_hr.shape[1])

    def step() -> None:
        torch.mm(xs, w_ih.t())  # the projection
        for _ in range(T):
            torch.mm(h, w_hh.t())  # forward: h W_hh^T
            torch.mm(g, w_hh)  # backward: d rec W_hh
            if w_hr is not None:
                torch.mm(m, w_hr.t())  # forward: h = m W_hr^T
                torch.mm(h, w_hr)  # backward: d m = d h W_hr
        torch.mm(dxp.t(), hs)  # d W_hh
        torch.mm(dxp.t(), xs)  # d W_ih
        torch.mm(dxp, w_ih)  # d x
        if w_hr is not None:
            torch.mm(hs.t(), ms)  # d W_hr
    return step


def measure(case, shape: tuple[int, int, int, int], args: argparse.Namespace,
            twin: str | None = None) -> list[dict[str, Any]]:
    """Every candidate of ``case`` at ``shape``, interleaved; the first is the baseline. A
    reversible case runs against ``twin``, the torch.nn class of its plain counterpart."""
    T, B, I, H = shape
    torch.manual_seed(0)
    x = torch.randn(T, B, I, requires_grad=True)
    models: dict[str, nn.Module] = {}
    candidates: dict[str, Callable[[], None]] = {}
    if twin:
        models["torch.nn"] = getattr(nn, twin)(I, H)
        for backend in ("cpu", "reference"):  # the case's hidden size is a test size: H here
            models[f"revrnn {backend}"] = case.module_class()(I, H, **case.kwargs, backend=backend)
        models["revrnn reference"].load_state_dict(models["revrnn cpu"].state_dict())
        warmup, repeats, target_of = 1, args.reversible_repeats, {"revrnn cpu": ("<=", REVERSIBLE_TARGET)}
    else:
        if case.baseline:
            models["torch.nn"] = case.make_baseline(I, H)
        for backend in ("cpu", "reference") if case.baseline else ("reference", "cpu"):
            models[f"revrnn {backend}"] = case.make(I, H, backend=backend)
        state = next(iter(models.values())).state_dict()
        for m in models.values():
            m.load_state_dict(state)
        if case.baseline:
            candidates["GEMM floor"] = gemm_floor(models["torch.nn"], x)
        warmup, repeats = args.warmup, args.repeats
        target = TARGET.get(shape) if case.baseline else EAGER_TARGET
        target_of = {"revrnn cpu": None if target is None else ("<=", target)}
    candidates = {**{name: training_step(m, x) for name, m in models.items()}, **candidates}
    return time_candidates(case.bench or case.name, shape, candidates, warmup, repeats, target_of)


def time_candidates(label: str, shape: tuple[int, int, int, int], candidates: dict[str, Callable[[], None]],
                    warmup: int, repeats: int, target_of: dict[str, tuple[str, float] | None]) -> list[dict[str, Any]]:
    """Times ``candidates`` interleaved, ``warmup`` untimed rounds then ``repeats`` timed ones; a
    row per candidate with its median and its ratio over the first's, checked against its target
    (``("<=", x)`` or ``(">=", x)``) where it has one."""
    T, B, I, H = shape
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_ in range(warmup + repeats):
        for name, step in candidates.items():
            t0 = time.perf_counter()
            step()
            if round_ >= warmup:
                times[name].append((time.perf_counter() - t0) * 1e3)
    first = next(iter(times))
    base = statistics.median(times[first])
    rows = []
    for name, ts in times.items():
        ms = statistics.median(ts)
        target = target_of.get(name)
        meets = None if target is None else (ms / base <= target[1] if target[0] == "<=" else ms / base >= target[1])
        rows.append({"case": label, "baseline": first, "T": T, "B": B, "I": I, "H": H,
                     "impl": name, "ms": ms, "us_per_step": ms / T * 1e3, "ratio": ms / base, "times_ms": ts,
                     "target": None if target is None else list(target), "meets": meets})
        print(f"  {label:10} T={T} B={B} I={I} H={H}  {name:18} {ms:9.2f} ms  {ms / base:6.2f}x",
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


def family_groups(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The families' own CPU benchmark groups: ``<group>_cpu(time_candidates, quick)`` in the
    bench module of a family that names the group (``Family.bench_groups``)."""
    import importlib

    from revrnn.cells import FAMILIES

    rows = []
    for family in FAMILIES:
        for group in family.bench_groups:
            if args.only and not any(name in group for name in args.only):
                continue
            run = getattr(importlib.import_module(f"{family.package}.bench"), f"{group}_cpu", None)
            if run is not None:
                rows += run(lambda label, shape, candidates, targets: time_candidates(
                    label, shape, candidates, args.warmup, args.repeats, targets), args.quick)
    return rows


def reversible_cases() -> list[tuple[Any, str]]:
    """The catalog's reversible benchmark cases, each with the torch.nn class of the cell it is
    the reversible counterpart of (``Family.reversible_of``, then that module's baseline)."""
    from revrnn.cells import FAMILIES, cases
    from revrnn.nn import MODULES

    plain_of = {rev: plain for family in FAMILIES for plain, rev in family.reversible_of.items() if plain != rev}
    baseline_of = {case.module: case.baseline for _, case in cases(baseline=True, bench=None)}
    out = []
    for _, case in cases(bench=True):
        cli = next((c for c, m in MODULES.items() if m.__name__ == case.module), None)
        if cli in plain_of:
            out.append((case, baseline_of[MODULES[plain_of[cli]].__name__]))
    return out


def table(rows: list[dict[str, Any]]) -> str:
    head = ["case", "T", "B", "I", "H", "impl", "ms", "µs/step", "ratio", "target"]  # ratio: over the first row
    lines = [[r["case"], str(r["T"]), str(r["B"]), str(r["I"]), str(r["H"]), r["impl"], f"{r['ms']:.2f}",
              f"{r['us_per_step']:.1f}", f"{r['ratio']:.2f}",
              "" if r["target"] is None else f"{r['target'][0]} {r['target'][1]:g} {'ok' if r['meets'] else 'MISS'}"]
             for r in rows]
    return align(head, lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores)")
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds, median reported (default 7)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    ap.add_argument("--reversible-repeats", type=int, default=3,
                    help="timed rounds of the reversible cells at T=10^4 (default 3)")
    ap.add_argument("--quick", action="store_true", help="one toy shape, 1 warmup, 2 repeats (smoke test)")
    ap.add_argument("--only", metavar="NAME", nargs="+",
                    help="run only the cases whose catalog name contains one of these (e.g. rev)")
    ap.add_argument("--out", type=Path, help="JSON path (default: bench/results/cpu_<machine>[_quick].json)")
    args = ap.parse_args(argv)
    if args.quick:
        args.warmup, args.repeats, args.reversible_repeats = 1, 2, 2
    torch.set_num_threads(args.threads)

    import revrnn
    from revrnn.cells import cases

    reason = revrnn.available_backends()["cpu"]
    if reason is not None:
        raise SystemExit(f"backend 'cpu' is unavailable: {reason}")
    machine = platform.processor() or platform.machine()
    print(f"cpu {machine}, {torch.get_num_threads()} threads", file=sys.stderr)
    def chosen(case) -> bool:
        return not args.only or any(name in case.name for name in args.only)

    shapes = QUICK if args.quick else SHAPES
    rows = [row for _, case in cases(baseline=True) if chosen(case)
            for shape in shapes for row in measure(case, shape, args)]
    rows += [row for case in eager_cases() if chosen(case) for shape in shapes for row in measure(case, shape, args)]
    rows += [row for case, twin in reversible_cases() if chosen(case)
             for row in measure(case, REVERSIBLE_QUICK if args.quick else REVERSIBLE_SHAPE, args, twin)]
    rows += family_groups(args)
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
