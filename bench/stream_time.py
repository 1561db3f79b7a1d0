"""What constant memory costs in time: one training step at T = 10⁴ (B=16 I=64 H=128, float32)
of the same strategy with and without the chunk-wise paths, interleaved in one process, medians
after a warm-up round:

* GRU, ``memory="recompute"`` (⌈√T⌉-step chunks): the projection of the whole sequence at once
  (the cells marked as not row-wise, which makes the engine project up front), the chunk-wise
  projection (the default), and the streamed loss (``revrnn.stream_backward``, ⌈√T⌉-step chunks,
  each stored: the same checkpointing, run from outside the module);
* RevGRU, ``memory="reversible"``: one call, and the streamed loss around it.

Target: the chunk-wise and streamed paths within 1.15× of the same strategy without them.

    python bench/stream_time.py [--T 10000] [--repeats 5] [--out file.json]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py
from report import ROOT, align, commit  # noqa: E402

import revrnn  # noqa: E402


def candidates(T: int) -> dict[str, tuple[str, callable]]:
    """label -> (the row's baseline label, one training step)."""
    torch.manual_seed(0)
    x, w = torch.randn(T, 16, 64), torch.randn(128)

    def loss_fn(out, t0):
        return (out @ w).sum()

    def whole(model):
        def step():
            out, _ = model(x)
            loss_fn(out, 0).backward()
        return step

    def streamed(model):
        return lambda: revrnn.stream_backward(model, x, loss_fn)

    gru = revrnn.nn.GRU(64, 128, memory="recompute")
    upfront = revrnn.nn.GRU(64, 128, memory="recompute")
    for cell in upfront.cells:
        cell.rowwise_projection = False  # the engine then projects the whole sequence first
    inner = revrnn.nn.GRU(64, 128)  # streamed: each √T-step chunk stored
    rev = revrnn.nn.RevGRU(64, 128)
    base = "GRU recompute, whole projection"
    return {base: (base, whole(upfront)), "GRU recompute, chunk-wise projection": (base, whole(gru)),
            "GRU streamed (stored √T chunks)": (base, streamed(inner)),
            "RevGRU reversible": ("RevGRU reversible", whole(rev)),
            "RevGRU streamed (reversible √T chunks)": ("RevGRU reversible", streamed(rev))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    todo = candidates(args.T)
    times: dict[str, list[float]] = {k: [] for k in todo}
    for round_ in range(args.repeats + 1):  # round 0 warms up
        for label, (_, step) in todo.items():
            t0 = time.perf_counter()
            step()
            if round_:
                times[label].append(time.perf_counter() - t0)
    rows = []
    for label, (base, _) in todo.items():
        ms = 1e3 * statistics.median(times[label])
        ratio = ms / (1e3 * statistics.median(times[base]))
        rows.append({"impl": label, "baseline": base, "ms": ms, "ratio": ratio, "times_ms": [1e3 * t for t in times[label]],
                     "target": ["<=", 1.15] if label != base else None,
                     "meets": None if label == base else ratio <= 1.15})
    print(align(["T", "impl", "ms", "ratio", "target"],
                [[str(args.T), r["impl"], f"{r['ms']:.0f}", f"{r['ratio']:.2f}",
                  "" if r["target"] is None else f"<= 1.15 {'ok' if r['meets'] else 'MISS'}"] for r in rows]))
    machine = platform.processor() or platform.machine()
    slug = "".join(c if c.isalnum() else "-" for c in machine.lower()).strip("-")
    out = args.out or ROOT / "bench" / "results" / f"stream_time_{slug}.json"
    meta = {"machine": machine, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(),
            "torch": torch.__version__, "revrnn": revrnn.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **commit(),
            "T": args.T, "repeats": args.repeats}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}", file=sys.stderr)


if __name__ == "__main__":
    main()
