"""What the stored slice saves: one training step of the reversal task's sequence-to-sequence
model (``revrnn.seq2seq.Seq2Seq``) on long sources, each configuration in a fresh process, the
process's peak resident set above its baseline (model, AdamW moments, data, libraries' buffers
after a warm-up step), as :mod:`revrnn.profile.process` measures.

Encoders (B=16, 128 units, a 64-step target): a RevGRU, reversible, whose attention reads a
16-unit slice (MacKay et al. §3.3) or all 128 units; the same RevGRU storing its activations;
revrnn's GRU storing them.

    python bench/seq2seq_memory.py [--S 2000,8000] [--out file.json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py
from report import ROOT, align  # noqa: E402
from report import meta as machine_meta  # noqa: E402

#: label -> (cell, encoder keywords, slice_dim)
CONFIGS = {"RevGRU reversible, 16-unit slice": ("RevGRU", {"memory": "reversible", "forget_bits": 3}, 16),
           "RevGRU reversible, all 128 units": ("RevGRU", {"memory": "reversible", "forget_bits": 3}, None),
           "RevGRU storing, 16-unit slice": ("RevGRU", {"memory": "store", "forget_bits": 3}, 16),
           "GRU storing, all 128 units": ("GRU", {"memory": "store"}, None)}
B, H, TARGET = 16, 128, 64


def child(label: str, S: int) -> dict:
    import time

    import torch

    import revrnn
    from revrnn.profile.process import peak_above, reset_peak
    from revrnn.seq2seq import Seq2Seq
    torch.set_num_threads(os.cpu_count())
    cell, kwargs, slice_dim = CONFIGS[label]
    torch.manual_seed(0)
    model = Seq2Seq(getattr(revrnn.nn, cell)(H, H, **kwargs), 10, H, slice_dim)
    opt = torch.optim.AdamW(model.parameters())
    src, tgt = torch.randint(0, 10, (S, B)), torch.randint(0, 10, (TARGET, B))

    def step(src):
        logits = model(src, model.shifted(tgt))
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=False)
    step(src[:8])  # warm-up: the optimiser's moments and the libraries' one-time buffers
    base = reset_peak()
    t = time.perf_counter()
    step(src)
    return {"label": label, "S": S, "peak_bytes": peak_above(base), "step_s": time.perf_counter() - t}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--S", default="2000,8000", help="source lengths (comma-separated)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "seq2seq_memory_x86-64.json")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    rows = []
    for S in (int(float(v)) for v in args.S.split(",")):
        for label in CONFIGS:
            done = subprocess.run([sys.executable, __file__, "--child", label, str(S)], capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
            row = json.loads(lines[-1]) if done.returncode == 0 and lines else \
                {"label": label, "S": S, "peak_bytes": None, "error": (done.stderr.strip().splitlines() or ["?"])[-1]}
            rows.append(row)
            print(f"{label:<36} S={S:<6} " + (f"{row['peak_bytes'] / 2 ** 20:8.1f} MiB  {row['step_s']:.2f} s"
                                               if row["peak_bytes"] is not None else row["error"]), flush=True)
    meta = {**machine_meta(), "batch": B, "hidden": H, "target": TARGET}
    args.out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(align(["configuration", *[f"S={S}" for S in sorted({r['S'] for r in rows})]],
                [[label, *[f"{r['peak_bytes'] / 2 ** 20:,.0f} MiB" if r["peak_bytes"] is not None else "error"
                           for r in rows if r["label"] == label]] for label in CONFIGS]))
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
