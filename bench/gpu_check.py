"""The one GPU check: run it first, in one call, whenever a GPU is available (at most 9 minutes of
step limits; each step has its own time limit, so a slow step costs its limit, not the session).

1. the machine: ``nvidia-smi``, torch, Triton and CUDA versions, the commit;
2. the CUDA extension builds (``REVRNN_CUDA=1``: ``revrnn._C_cuda``, the ``cuda`` backend);
3. ``pytest -m gpu``: the Triton and CUDA backends against the reference on the GPU;
4. ``revrnn bench sequence`` on the GPU for the LSTM, the GRU and the reversible cells: Triton and
   the CUDA executor against cuDNN (float32 and float16, persistent kernels), store against
   reversible, the eager loop and torch.compile of it;
5. ``revrnn bench kernels`` on the GPU for the LSTM and the GRU: the chunk calls per step, forward and
   backward, and the pointwise passes alone, against the GEMMs alone and the bytes floor.

Writes ``gpu_check.json`` and ``gpu_check.md`` (every step's command, exit status, time and the
tail of its output) and the benchmarks' results (JSON, markdown, PNG) into ``--out`` (``$OUT`` when set, else
``bench/results/gpu_check/``). ``--dry-run`` writes the same files without running a step: the
CPU test of this script's own logic.

    python bench/gpu_check.py [--out DIR] [--dry-run]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/report.py
from report import ROOT, commit  # noqa: E402


#: the cases the benchmark steps run (the catalog's names)
GPU_CASES = ("lstm", "gru", "revgru-k3", "revlstm-k3")


def steps(out: Path) -> list[tuple[str, list[str], dict, int]]:
    """(name, command, extra environment, seconds allowed) of each step, in order."""
    py = sys.executable
    return [
        ("machine", ["nvidia-smi"], {}, 30),
        ("versions", [py, "-c", "import torch, triton; print(torch.__version__, torch.version.cuda, triton.__version__, "
                                "torch.cuda.get_device_name())"], {}, 30),
        ("build CUDA extension", [py, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "-e", "."],
         {"REVRNN_CUDA": "1"}, 120),
        ("pytest -m gpu", [py, "-m", "pytest", "-q", "-m", "gpu", "--maxfail=10", "tests"], {}, 180),
        ("sequence benchmark", [py, "-m", "revrnn", "bench", "sequence", "--device", "cuda", "--no-progress", "--only",
                                *GPU_CASES, "--out", str(out)], {}, 120),
        ("kernels benchmark", [py, "-m", "revrnn", "bench", "kernels", "--device", "cuda", "--no-progress", "--only",
                               *GPU_CASES[:2], "--out", str(out)], {}, 60),
    ]


def run(out: Path, dry_run: bool) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "dry_run": dry_run, **commit(), "steps": []}
    for name, cmd, env, limit in steps(out):
        row = {"name": name, "command": " ".join(cmd), "env": env, "limit_s": limit}
        if dry_run:
            row |= {"rc": None, "seconds": 0.0, "tail": "(dry run)"}
        else:
            t = time.perf_counter()
            try:
                done = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True,
                                      timeout=limit)
                row |= {"rc": done.returncode, "tail": (done.stdout + done.stderr)[-3000:]}
            except subprocess.TimeoutExpired as e:
                row |= {"rc": "timeout", "tail": str(e)[-3000:]}
            except FileNotFoundError as e:
                row |= {"rc": "missing", "tail": str(e)}
            row["seconds"] = round(time.perf_counter() - t, 1)
        report["steps"].append(row)
        print(f"{name:<22} rc={row['rc']}  {row['seconds']:.0f} s", flush=True)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1))  # after every step: a cut run keeps its rows
    lines = [f"# GPU check, {report['date']}, commit {report['commit']}{' (dry run)' if dry_run else ''}", "",
             "| step | exit | seconds |", "|---|---|---|"]
    lines += [f"| {r['name']} | {r['rc']} | {r['seconds']:.0f} |" for r in report["steps"]]
    for r in report["steps"]:
        lines += ["", f"## {r['name']}", "", f"`{r['command']}`", "", "```", r["tail"].strip(), "```"]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    return report


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(os.environ["OUT"]) if os.environ.get("OUT") else ROOT / "bench" / "results" / "gpu_check"
    ap.add_argument("--out", type=Path, default=default)
    ap.add_argument("--dry-run", action="store_true", help="write the report without running any step")
    args = ap.parse_args(argv)
    run(args.out, args.dry_run)


if __name__ == "__main__":
    main()
