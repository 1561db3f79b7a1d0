"""torch.compile of the modules: compile time against T, and steady-state speed against eager.

For each module and backend, at each T: the first call of ``module.compile(fullgraph=True)``
(forward + backward of ``out.sum()``, which compiles; ``torch._dynamo.reset()`` before it), then
compiled and eager training steps interleaved in one process, medians after one warm-up each.
While compiling, a module is one custom op (revrnn/stack_op.py): compile time should not grow
with T, and a compiled step should cost what an eager one does.

    python bench/compile.py [--T 100 1000] [--repeats 5] [--out file.json]
"""
from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py
from report import ROOT, align, meta  # noqa: E402

import revrnn  # noqa: E402

#: (module, backend): the default CPU paths and the reference loop
ROWS = [("GRU", "cpu"), ("LSTM", "cpu"), ("RevGRU", "cpu"), ("GRU", "reference")]


def step(model, x) -> None:
    out, _ = model(x)
    out.sum().backward()


def measure(module: str, backend: str, T: int, repeats: int) -> dict:
    torch.manual_seed(0)
    eager = getattr(revrnn.nn, module)(32, 64, backend=backend)
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    compiled.compile(fullgraph=True)
    x = torch.randn(T, 8, 32, requires_grad=True)
    t = time.perf_counter()
    step(compiled, x)
    first = time.perf_counter() - t
    step(eager, x)  # warm-up
    times = {"eager": [], "compiled": []}
    for _ in range(repeats):
        for name, model in (("eager", eager), ("compiled", compiled)):
            t = time.perf_counter()
            step(model, x)
            times[name].append(time.perf_counter() - t)
    e, c = statistics.median(times["eager"]), statistics.median(times["compiled"])
    return {"module": module, "backend": backend, "T": T, "first_call_s": first, "eager_s": e, "compiled_s": c,
            "ratio": c / e, "compile_s": first - c}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "compile_cpu.json")
    args = ap.parse_args(argv)
    rows = [measure(m, b, T, args.repeats) for m, b in ROWS for T in args.T]
    print(align(["module", "backend", "T", "compile s", "eager ms", "compiled ms", "compiled/eager"],
                [[r["module"], r["backend"], str(r["T"]), f"{r['compile_s']:.2f}", f"{1e3 * r['eager_s']:.1f}",
                  f"{1e3 * r['compiled_s']:.1f}", f"{r['ratio']:.2f}"] for r in rows]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({**meta(), "threads": torch.get_num_threads(), "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
