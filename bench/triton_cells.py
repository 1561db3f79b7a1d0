"""Speed of revrnn's GPU backends (Triton and, where available, the CUDA executor) against their
baselines, forward + backward.

Each row times one training step, ``loss = out.sum() + Σ final states; loss.backward()``, with
the input requiring grad: ``--warmup`` untimed steps, then the median of ``--repeats`` timed
ones (CUDA events), and the peak of ``torch.cuda.max_memory_allocated`` above the allocation
before the timed steps. Rows of one comparison run in the same process, one after the other,
and carry ``ratio`` = their time per step over the comparison's baseline row's (ratio 1):

* ``cudnn``: the catalog's cases with a torch.nn twin (``Case.baseline``) and no ``cells``
  label — torch.nn's LSTM and GRU — at B=64, H=I=512, T=1000 and at B=16, H=I=128; revrnn
  ``backend="triton"`` against torch.nn (cuDNN) in float32 with TF32 off, the same arithmetic
  as the kernels (baseline; a second row has torch's default, TF32 on), and in float16, the
  only dtype for which torch lets cuDNN pick its persistent algorithm (PERSIST_STATIC, where
  its size heuristics allow). At the small size revrnn runs without and with its persistent
  kernels (``persistent="always"``). Target: revrnn ≤ 1.2.
* ``cells``: the catalog's benchmark cases (``Case.bench`` in ``revrnn/cells/<family>/``), but
  the reversible ones, Triton (baseline, T steps) against the eager PyTorch loop
  (``backend="reference"``) and ``torch.compile`` of it, those two at ``--eager-T`` steps
  (default 100): the loop's time is linear in T and compiling unrolls it, so a full-length run
  would only cost time; ratios are per step. A compile that fails or passes
  ``--compile-timeout`` is a row with its error. Target: eager ≥ 20. A case with a torch.nn
  twin (the LSTM with ``proj_size = H/4``) is compared with cuDNN instead (float32, TF32 off).
  Target: revrnn ≤ 1.2.
* ``reversible``: the reversible benchmark cases on Triton, ``memory="store"`` (baseline)
  against ``"reversible"``. Target: reversible ≤ 1.5.
* the families' own groups (``Family.bench_groups``, defined in ``revrnn/cells/<family>/bench.py``;
  an unknown ``--only`` name lists them).

Where ``backend="cuda"`` is available (``revrnn._C_cuda`` built, cuBLAS loaded, a GPU), each
comparison of the first three groups has a ``revrnn cuda`` row beside the Triton one, with the
same target.

Run on a GPU (the JSON goes to ``bench/results/triton_<device>[_<groups>].json``)::

    python bench/triton_cells.py [--only cudnn cells] [--repeats 20] [--out file.json]

Absolute times are noisy (clocks, other tenants, launch latency); the ratios within one run
are what counts. ``--device cpu --quick`` runs every row at toy sizes in Triton's interpreter
(set here before revrnn is imported) with torch.nn's CPU RNNs in place of cuDNN: a smoke
test whose times mean nothing.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import os
import platform
import re
import signal
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py, also when loaded from a file
from report import ROOT, align, commit  # noqa: E402
FULL = dict(T=1000, batch=64, hidden=512, input=512, small_batch=16, small_hidden=128, eager_T=100,
            warmup=3, repeats=10)
QUICK = dict(T=8, batch=2, hidden=8, input=8, small_batch=2, small_hidden=8, eager_T=4, warmup=1, repeats=2)
MiB = 2 ** 20

Setting = tuple[Any, str, Any]  # (object, attribute, value) set while a row runs
Target = tuple[str, float]  # ("<=" or ">=", bound) on a row's ratio


@contextlib.contextmanager
def setting(obj: Any, name: str, value: Any) -> Iterator[None]:
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise TimeoutError inside the block after ``seconds`` (SIGALRM: main thread, POSIX)."""
    if seconds <= 0 or not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
        yield
        return

    def fire(*_: Any) -> None:
        raise TimeoutError(f"gave up after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def describe(err: BaseException) -> str:
    """Type and first line of ``err``, and of its root cause when it wraps one (Dynamo does,
    as ``__cause__`` or ``inner_exception``)."""
    def line(e: BaseException) -> str:
        first = str(e).strip().splitlines()
        return f"{type(e).__name__}: {first[0]}" if first else type(e).__name__

    root, inner = err, err.__cause__ or getattr(err, "inner_exception", None)
    while inner is not None:
        root, inner = inner, inner.__cause__ or getattr(inner, "inner_exception", None)
    return (line(err) if root is err else f"{line(err)} (cause: {line(root)})")[:300]


def states(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


class Bench:
    """Measures rows on one device and keeps them."""

    def __init__(self, args: argparse.Namespace) -> None:
        import revrnn
        from revrnn.backends import get_backend

        self.args, self.device = args, torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        if self.cuda:  # events, peaks and synchronize below act on the current device
            if self.device.index is None:
                self.device = torch.device("cuda", torch.cuda.current_device())
            torch.cuda.set_device(self.device)
        self.triton = get_backend("triton", self.device)
        self.cuda_backend = self.cuda and revrnn.available_backends(self.device)["cuda"] is None
        self.rows: list[dict[str, Any]] = []

    def timed(self, model: nn.Module, x: Tensor, warmup: int) -> dict[str, Any]:
        def step() -> None:
            out, state = model(x)
            (out.sum() + sum(s.sum() for s in states(state))).backward()

        for _ in range(warmup):
            step()
        times = []
        if self.cuda:
            gc.collect()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        for _ in range(self.args.repeats):
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                step()
                times.append((time.perf_counter() - t0) * 1e3)
        ms = statistics.median(times)
        peak = (torch.cuda.max_memory_allocated() - base) / MiB if self.cuda else None
        return {"ms": ms, "ms_per_step": ms / x.shape[0], "times_ms": times, "peak_mib": peak}

    def row(self, group: str, case: str, impl: str, make: Callable[[], nn.Module], *, T: int, B: int, I: int,
            H: int, dtype: torch.dtype = torch.float32, settings: tuple[Setting, ...] = (), compiled: bool = False,
            target: Target | None = None, **extra: Any) -> dict[str, Any]:
        """Build ``make()`` (on CPU from seed 0, then moved) and time it on a (T, B, I) input."""
        row: dict[str, Any] = {"group": group, "case": case, "impl": impl, "T": T, "B": B, "I": I, "H": H,
                               "dtype": str(dtype).removeprefix("torch."), "target": target, **extra}
        try:
            with contextlib.ExitStack() as stack:
                for obj, name, value in settings:
                    stack.enter_context(setting(obj, name, value))
                if compiled:
                    torch._dynamo.reset()  # each compiled module gets fresh caches (no recompile limit)
                    stack.enter_context(deadline(self.args.compile_timeout))
                torch.manual_seed(0)
                model = make().to(self.device, dtype)
                if compiled:
                    model = torch.compile(model)
                x = torch.randn(T, B, I, device=self.device, dtype=dtype, requires_grad=True)
                row.update(self.timed(model, x, max(self.args.warmup, 2) if compiled else self.args.warmup))
        except Exception as err:  # a row that cannot run (OOM, unsupported, compile failure) is reported
            row["error"] = describe(err)
        finally:
            model = x = None  # released before the cache is emptied
            if self.cuda:
                torch.cuda.empty_cache()
        self.rows.append(row)
        done = f"{row['ms_per_step']:.4g} ms/step" if "ms" in row else row["error"]
        print(f"  {group:10} {case:30} {impl:32} {done}", file=sys.stderr, flush=True)
        return row

    @staticmethod
    def compare(rows: list[dict[str, Any]]) -> None:
        """Ratios of time per step over the first row's, and whether each target is met."""
        base = rows[0]
        for r in rows:
            r["baseline"] = base["impl"]
            r["ratio"] = r["ms_per_step"] / base["ms_per_step"] if "ms" in r and "ms" in base else None
            if r["target"] is not None:
                op, bound = r["target"]
                r["meets"] = None if r["ratio"] is None else (r["ratio"] <= bound if op == "<=" else r["ratio"] >= bound)


def cudnn_group(b: Bench) -> None:
    from revrnn.cells import cases

    a = b.args
    theirs = "cudnn" if b.cuda else "torch.nn (CPU)"
    for _, c in cases(baseline=True, bench=None):
        sizes = ((a.batch, a.input, a.hidden, False), (a.small_batch, a.small_hidden, a.small_hidden, True))
        for B, I, H, small in sizes:
            for dtype in (torch.float32, torch.float16):
                case, fp = f"{c.baseline} B={B} H={H} T={a.T}", "fp32" if dtype == torch.float32 else "fp16"
                kw = dict(T=a.T, B=B, I=I, H=H, dtype=dtype)
                rows = [b.row("cudnn", case, f"{theirs} {fp}", lambda: c.make_baseline(I, H),
                              settings=((torch.backends.cudnn, "allow_tf32", False),), **kw)]
                if b.cuda and dtype == torch.float32:
                    rows.append(b.row("cudnn", case, "cudnn fp32 TF32", lambda: c.make_baseline(I, H),
                                      settings=((torch.backends.cudnn, "allow_tf32", True),), **kw))
                for mode in ("never", "always") if small else ("never",):
                    impl = f"revrnn triton {fp}" + (f" persistent={mode}" if small else "")
                    rows.append(b.row("cudnn", case, impl, lambda: c.make(I, H, backend="triton"),
                                      settings=((b.triton, "persistent", mode),), target=("<=", 1.2), **kw))
                if b.cuda_backend:
                    rows.append(b.row("cudnn", case, f"revrnn cuda {fp}", lambda: c.make(I, H, backend="cuda"),
                                      target=("<=", 1.2), **kw))
                b.compare(rows)


def cells_group(b: Bench) -> None:
    from revrnn.cells import cases

    a = b.args
    kw = dict(T=a.T, B=a.batch, I=a.input, H=a.hidden)
    for _, c in cases(bench=True):
        if "reversible" in c.module_class().memory_modes:
            continue  # their own group
        case = f"{c.bench} B={a.batch} H={a.hidden}"
        make = lambda backend, c=c: c.make(a.input, a.hidden, backend=backend)  # noqa: E731
        if c.baseline:  # torch.nn computes it: cuDNN is the baseline
            b.compare([b.row("cells", case, "cudnn" if b.cuda else "torch.nn (CPU)",
                             lambda: c.make_baseline(a.input, a.hidden),
                             settings=((torch.backends.cudnn, "allow_tf32", False),), **kw),
                       b.row("cells", case, "revrnn triton", lambda: make("triton"), target=("<=", 1.2), **kw),
                       *cuda_rows(b, "cells", case, lambda: make("cuda"), ("<=", 1.2), **kw)])
            continue
        eager = {**kw, "T": a.eager_T}
        b.compare([b.row("cells", case, "revrnn triton", lambda: make("triton"), **kw),
                   *cuda_rows(b, "cells", case, lambda: make("cuda"), None, **kw),
                   b.row("cells", case, "eager (reference)", lambda: make("reference"), target=(">=", 20.0), **eager),
                   b.row("cells", case, "torch.compile(reference)", lambda: make("reference"), compiled=True,
                         **eager)])


def reversible_group(b: Bench) -> None:
    from revrnn.cells import cases

    a = b.args
    kw = dict(T=a.T, B=a.batch, I=a.input, H=a.hidden)
    for _, c in cases(bench=True):
        if "reversible" not in c.module_class().memory_modes:
            continue
        case = f"{c.bench} B={a.batch} H={a.hidden}"
        b.compare([b.row("reversible", case, "triton store",
                         lambda: c.make(a.input, a.hidden, backend="triton", memory="store"), **kw),
                   b.row("reversible", case, "triton reversible", lambda: c.make(a.input, a.hidden, backend="triton"),
                         target=("<=", 1.5), **kw),
                   *cuda_rows(b, "reversible", case, lambda: c.make(a.input, a.hidden, backend="cuda"), ("<=", 1.5),
                              **kw)])


def cuda_rows(b: Bench, group: str, case: str, make, target, **kw) -> list[dict[str, Any]]:
    """The ``revrnn cuda`` row of a comparison where that backend is available (a cell it does not
    run is a row with the error)."""
    return [b.row(group, case, "revrnn cuda", make, target=target, **kw)] if b.cuda_backend else []


def runners() -> dict[str, Callable[[Bench], None]]:
    """Every group's function: the three above and the families' (``Family.bench_groups``)."""
    import importlib

    from revrnn.cells import FAMILIES

    own = {f.name: importlib.import_module(f"{f.package}.bench") for f in FAMILIES if f.bench_groups}
    return {"cudnn": cudnn_group, "cells": cells_group, "reversible": reversible_group,
            **{g: getattr(own[f.name], g) for f in FAMILIES for g in f.bench_groups}}


def table(rows: list[dict[str, Any]]) -> str:
    head = ["group", "case", "impl", "dtype", "T", "ms/step", "ratio", "target", "peak MiB", "notes"]
    lines = []
    for r in rows:
        target = "" if r["target"] is None else f"{r['target'][0]} {r['target'][1]:g}" + (
            "" if r.get("meets") is None else (" ok" if r["meets"] else " MISS"))
        notes = r.get("error") or ", ".join(f"{k}={r[k]:.3f}" for k in ("open_fraction", "skipped_fraction") if k in r)
        lines.append([r["group"], r["case"], r["impl"], r["dtype"], str(r["T"]),
                      f"{r['ms_per_step']:.4g}" if "ms" in r else "-",
                      f"{r['ratio']:.3g}" if r.get("ratio") is not None else "-", target,
                      f"{r['peak_mib']:.1f}" if r.get("peak_mib") is not None else "-", notes])
    return align(head, lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu {platform.processor() or platform.machine()}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (Triton's interpreter)")
    ap.add_argument("--quick", action="store_true", help="toy sizes, 1 warmup, 2 repeats (smoke test)")
    ap.add_argument("--only", nargs="+", metavar="GROUP",
                    help="groups to run: cudnn, cells, reversible and the families' own (default: all)")
    ap.add_argument("--out", type=Path, help="JSON path (default: bench/results/triton_<device>[_<groups>][_quick].json)")
    ap.add_argument("--repeats", type=int, help="timed steps per row, median reported (default 10)")
    ap.add_argument("--warmup", type=int, help="untimed steps first (default 3; at least 2 when compiled)")
    ap.add_argument("--T", type=int, help="sequence length (default 1000)")
    ap.add_argument("--batch", type=int, help="batch of every group but cudnn's small case (default 64)")
    ap.add_argument("--hidden", type=int, help="hidden size (default 512)")
    ap.add_argument("--input", type=int, help="input size (default 512)")
    ap.add_argument("--small-batch", type=int, help="cudnn small case batch (default 16)")
    ap.add_argument("--small-hidden", type=int, help="cudnn small case hidden = input size (default 128)")
    ap.add_argument("--eager-T", type=int, help="steps of the eager and compiled rows of 'cells' (default 100)")
    ap.add_argument("--compile-timeout", type=float, default=300.0,
                    help="seconds for one torch.compile row, compilation included (0: no limit)")
    args = ap.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.eager_T = min(args.eager_T, args.T)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if torch.device(args.device).type == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"  # read when revrnn's kernels are defined, at its import
    import triton

    groups = runners()
    unknown = sorted(set(args.only or ()) - set(groups))
    if unknown:
        raise SystemExit(f"--only: unknown group(s) {', '.join(unknown)}; choose from {', '.join(groups)}")
    only = args.only or list(groups)
    bench = Bench(args)
    name = device_name(bench.device)
    print(f"{name}: {', '.join(only)}", file=sys.stderr)
    for group in only:
        groups[group](bench)
    print(table(bench.rows))
    print("ratio: time per step over that of the first row of its case (the baseline)")

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    part = "" if set(only) == set(groups) else "_" + "-".join(only)
    out = args.out or ROOT / "bench" / "results" / f"triton_{slug}{part}{'_quick' if args.quick else ''}.json"
    meta = {"device": name, "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if bench.cuda else None,
            "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32, "python": platform.python_version(),
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            **commit(),
            "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": bench.rows}, indent=1))
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
