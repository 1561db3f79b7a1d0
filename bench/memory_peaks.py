"""Memory as a user sees it: the process peak of one training step, each configuration in a fresh
process (:mod:`revrnn.profile.process`: peak resident set above the process before the step, with
the model, its optimiser, the input and the libraries' own buffers in that baseline), beside
revrnn's accounting, for T = 10³ … 10⁶ at B=16 I=64 H=128 float32, a GRU and its reversible
counterpart against torch.nn (plain, with ``torch.utils.checkpoint`` over ⌈√T⌉-step chunks, and
with ``torch.autograd.graph.save_on_cpu``).

Without the streamed loss the outputs and their gradient (T·B·H each) are the user's own and
count in the peak; with it (``revrnn.stream_backward``, 1000-step chunks, the input generated on
request) nothing of size T exists. The million-step rows are the streamed ones at T = 10⁶, with
``--long-steps`` training steps each (AdamW). Each row records the commit it ran at; ``--append``
adds rows to the file, so a sweep can be run in parts.

    python bench/memory_peaks.py [--quick] [--lengths 1e3,1e4] [--streamed-lengths 1e6] [--repeat 3] [--append]

Writes ``bench/results/memory_peaks_<machine>.json`` (every row, the machine, versions, commit)
and prints the table in markdown for the README.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py
from report import ROOT, commit  # noqa: E402
from report import meta as machine_meta  # noqa: E402
from revrnn.profile.process import Run, measure, table  # noqa: E402

SIZES = dict(batch=16, input_size=64, hidden=128)
CHUNK = 1000


#: the non-streamed rows: (model, strategy, extra keywords, the longest T)
PLAIN = (("torch.GRU", "bptt", {}, 10 ** 5), ("torch.GRU", "ckpt", {}, 10 ** 4), ("torch.GRU", "save_on_cpu", {}, 10 ** 4),
         ("gru", "bptt", {}, 10 ** 4), ("gru", "ckpt", {}, 10 ** 5), ("gru", "revolve:8", {}, 10 ** 4),
         ("revgru", "reversible", dict(forget_bits=0), 10 ** 5), ("revgru", "reversible", dict(forget_bits=3), 10 ** 5))
#: the streamed rows (1000-step chunks, generated input); the GRU recomputes inside each chunk (a
#: state every 32 steps): the binomial schedule's reverse runs one step per call, ~5 ms a step here
STREAMED = (("gru", "ckpt", {}), ("revgru", "reversible", dict(forget_bits=0)),
            ("revgru", "reversible", dict(forget_bits=3)))


def runs(lengths: list[int], streamed_lengths: list[int], threads: int, steps: int, long_steps: int) -> list[Run]:
    out = [Run(model, strategy, T=T, threads=threads, steps=steps, **SIZES, **extra)
           for T in lengths for model, strategy, extra, longest in PLAIN if T <= longest]
    out += [Run(model, strategy, T=T, stream=True, chunk=CHUNK, generated=True, threads=threads,
                steps=long_steps if T >= 10 ** 6 else steps, **SIZES, **extra)
            for T in streamed_lengths for model, strategy, extra in STREAMED]
    return out


def markdown(rows: list[dict]) -> str:
    lengths = sorted({r["run"]["T"] for r in rows})
    names = list(dict.fromkeys(r["name"] for r in rows))
    cell = {(r["name"], r["run"]["T"]): r for r in rows}

    def fmt(r):
        if r is None:
            return ""
        if r["oom"]:
            return "out of memory"
        if r["peak_bytes"] is None:
            return r["error"] or ""
        text = f"{r['peak_bytes'] / 2 ** 20:,.0f} MiB"
        return text + (f" ({r['step_s']:.1f} s)" if r["step_s"] is not None and r["step_s"] >= 10 else "")
    head = "| configuration | " + " | ".join(f"T={T:,}" for T in lengths) + " |"
    lines = [head, "|---|" + "---|" * len(lengths)]
    lines += ["| " + n + " | " + " | ".join(fmt(cell.get((n, T))) for T in lengths) + " |" for n in names]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T = 1000 and 4000 only (smoke test)")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=1, help="training steps per row (median time)")
    ap.add_argument("--long-steps", type=int, default=3, help="training steps of the T = 10⁶ rows")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    ap.add_argument("--lengths", default="1e3,1e4,1e5", help="T of the non-streamed rows (comma-separated)")
    ap.add_argument("--streamed-lengths", default="1e4,1e5,1e6", help="T of the streamed rows")
    ap.add_argument("--repeat", type=int, default=1,
                    help="fresh processes per row; the row is the one of median peak (the heap's retention "
                         "varies by several MiB from run to run), every peak kept in its extra")
    ap.add_argument("--append", action="store_true",
                    help="add the rows to the JSON file (replacing rows of the same configuration and T)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"argument --repeat must be >= 1, got {args.repeat}")

    def lengths(text: str) -> list[int]:
        return [int(float(v)) for v in text.split(",") if v]
    if args.quick:
        todo = runs([1000], [1000, 4000], args.threads, 1, 1)
    else:
        todo = runs(lengths(args.lengths), lengths(args.streamed_lengths), args.threads, args.steps, args.long_steps)
    here = commit()  # of the code the rows run
    peaks = []
    for i, run in enumerate(todo):
        print(f"[{i + 1}/{len(todo)}] {run.name} T={run.T}", file=sys.stderr, flush=True)
        peaks.append(measure(run, args.timeout, repeats=args.repeat))
        print(table(peaks[-1:]).splitlines()[1], file=sys.stderr, flush=True)
    print(table(peaks))
    machine = platform.processor() or platform.machine()
    slug = "".join(c if c.isalnum() else "-" for c in machine.lower()).strip("-")
    out = args.out or ROOT / "bench" / "results" / f"memory_peaks_{slug}{'_quick' if args.quick else ''}.json"
    rows = [p.to_dict() | {"commit": here["commit"], "dirty": here["dirty"]} for p in peaks]
    if args.append and out.exists():
        new = {(r["name"], r["run"]["T"]) for r in rows}
        rows = [r for r in json.loads(out.read_text())["rows"] if (r["name"], r["run"]["T"]) not in new] + rows
    print()
    print(markdown(rows))
    meta = {**machine_meta(), "threads": args.threads,
            "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2 ** 30:.1f} GiB",
            "sizes": SIZES, "chunk": CHUNK, **here, "args": {k: str(v) for k, v in vars(args).items()}}
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}", file=sys.stderr)


if __name__ == "__main__":
    main()
