"""One recorded run per technique family: the command-line run, its final validation metric
against the memoryless baseline, its time, and the process's peak resident set above the
process before training (each run in a fresh process). Writes, per run, its metrics.jsonl and
curve.png under ``bench/results/workloads/<name>/`` and a summary ``workloads.json``; prints a
markdown table for the README.

    python bench/workloads.py [--only copy,chars] [--scale 1.0]
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py
from report import ROOT, commit  # noqa: E402
from report import meta as machine_meta  # noqa: E402

OUT = ROOT / "bench" / "results" / "workloads"
#: name -> (what it shows, the `revrnn train` flags; --steps scaled by --scale)
RUNS = {
    "copy": ("reversible GRU, streamed loss: copy memory over a 180-step delay",
             "--task copy --T 200 --cell revgru --hidden 128 --stream 50 --steps 1500 --lr 3e-3"),
    "chars": ("LSTM language model, truncated backpropagation with the state carried across batches",
              "--task chars --T 256 --cell lstm --hidden 256 --tbptt 64 --steps 400 --batch 32 --lr 3e-3"),
    "pdigits-aux": ("r-LSS auxiliary loss (pretrain, then joint) with truncated backpropagation",
                    "--task pdigits --T 256 --cell gru --hidden 128 --tbptt 64 --aux r:64 --aux-window 64 "
                    "--aux-pretrain 100 --steps 600 --batch 64 --lr 3e-3"),
    "digits-glstm": ("g-LSTM with the computational budget and a temporal curriculum",
                     "--task digits --cell glstm --hidden 128 --curriculum 0:64,300:128,600:256 --budget 0.01 "
                     "--memory recompute --steps 900 --batch 64 --lr 3e-3"),
    "reverse-seq2seq": ("reversible encoder, attention over a 16-unit slice, GRU decoder",
                        "--task reverse --T 30 --cell revgru --hidden 128 --slice-dim 16 --steps 800 --lr 5e-3"),
}


def child(name: str, flags: list[str]) -> None:
    """In the fresh process: the peak resident set of the whole run above the process before it."""
    import matplotlib.pyplot  # noqa: F401  (the curve's plotting library, in the baseline)

    from revrnn.cli import main
    from revrnn.profile.process import peak_above, reset_peak
    base = reset_peak()
    main(["train", *flags, "--out", str(OUT / name), "--no-progress", "--threads", str(os.cpu_count())])
    print(json.dumps({"peak_bytes": peak_above(base)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(RUNS), help="runs (comma-separated)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every run's steps")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], json.loads(args.child[1]))
        return
    summary_path = OUT / "workloads.json"
    summary = json.loads(summary_path.read_text())["runs"] if summary_path.exists() else {}
    for name in args.only.split(","):
        what, flags = RUNS[name]
        flags = shlex.split(flags)
        i = flags.index("--steps")
        flags[i + 1] = str(max(1, round(int(flags[i + 1]) * args.scale)))
        if (OUT / name).exists():
            for f in (OUT / name).iterdir():
                f.unlink()
        done = subprocess.run([sys.executable, __file__, "--child", name, json.dumps(flags)],
                              capture_output=True, text=True)
        if done.returncode:
            print(f"{name}: failed: {done.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            continue
        peak = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])["peak_bytes"]
        rows = [json.loads(line) for line in (OUT / name / "metrics.jsonl").read_text().splitlines()]
        head, valid = rows[0], [r for r in rows[1:] if r["split"] == "valid"][-1]
        train = [r for r in rows[1:] if r["split"] == "train"][-1]
        (OUT / name / "checkpoint.pt").unlink()  # large; the run is reproducible from its command
        summary[name] = {"what": what, "command": "revrnn train " + " ".join(flags), "peak_bytes": peak,
                         "valid": valid, "baseline": head["baseline"], "metric": head["metric"],
                         "seconds": train["seconds"], "open_fraction": train.get("open_fraction"),
                         "aux_seconds": train.get("aux_seconds"), **commit()}
        print(f"{name}: {valid}  peak {peak / 2 ** 20:.0f} MiB  {train['seconds']:.0f} s", flush=True)
        summary_path.write_text(json.dumps({"meta": machine_meta(), "runs": summary}, indent=1))
    print("| run | command | validation | without memory | time | process peak |")
    print("|---|---|---|---|---|---|")
    for name, r in summary.items():
        extra = f", {r['open_fraction']:.0%} of neuron updates" if r.get("open_fraction") is not None else ""
        print(f"| {r['what']} | `{r['command']}` | {r['metric']} {r['valid'][r['metric']]:.3f}, loss "
              f"{r['valid']['loss']:.3f}{extra} | loss {r['baseline']:.3f} | {r['seconds']:.0f} s | "
              f"{r['peak_bytes'] / 2 ** 20:,.0f} MiB |")


if __name__ == "__main__":
    main()
