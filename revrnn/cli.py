"""The ``revrnn`` command: ``train`` a cell on a long-range task, ``profile`` the memory of training
strategies against sequence length, ``demo`` the library end to end."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from . import available_backends, init
from . import nn as rnn
from .profile import Strategy, cell_factory, memory_sweep
from .profile.sweep import REVERSIBLE_OF
from .schedule import default_every
from .tasks import ADDING_BASELINE_MSE
from .train import Regressor, train_adding

CELLS = rnn.MODULES
#: the modules whose memory modes are "store" and "reversible"
REVERSIBLE = set(REVERSIBLE_OF.values())


def memory_modes(cell: str) -> tuple[str, ...]:
    """The cell's memory strategies, ``store`` (the baseline) first."""
    return ("store", "reversible") if cell in REVERSIBLE else ("store", "recompute")


def build(cell: str, hidden: int, layers: int, backend: str, memory: str,
          checkpoint_every: int | None, chrono: float | None, input_size: int = 2) -> rnn.RecurrentBase:
    if memory not in memory_modes(cell):
        raise SystemExit(f"revrnn: --memory {memory} is not available for --cell {cell}; "
                         f"choose from {', '.join(memory_modes(cell))}")
    extra = {} if cell in REVERSIBLE else {"checkpoint_every": checkpoint_every}
    module = CELLS[cell](input_size, hidden, num_layers=layers, backend=backend, memory=memory, **extra)
    if chrono:
        init.chrono_(module, chrono)
    return module


def memory_table(cell: str, hidden: int, batch: int, lengths: Sequence[int], backend: str) -> list[dict]:
    """Per memory strategy of ``cell`` and length: bytes held for backward when the forward ends,
    and the gradient error relative to ``store`` (both exact: the error is rounding only).
    A short :func:`revrnn.profile.memory_sweep` without timing."""
    strategies = {"store": Strategy.bptt(), "recompute": Strategy.checkpoint(), "reversible": Strategy.reversible()}
    mode_of = {strategies[m].name: m for m in memory_modes(cell)}
    report = memory_sweep(cell_factory(cell, 2, hidden, 1, backend), lengths, batch, 2,
                          [strategies[m] for m in memory_modes(cell)], repeats=0)
    store = {r.T: r.saved_bytes for r in report.rows if mode_of[r.strategy] == "store"}
    return [{"T": r.T, "memory": mode_of[r.strategy], "activation_bytes": r.saved_bytes,
             "checkpoint_every": default_every(r.T) if mode_of[r.strategy] == "recompute" else None,
             "grad_rel_err_vs_store": r.grad_rel_err_vs_bptt, "ratio_vs_store": r.saved_bytes / store[r.T]}
            for r in report.rows]


def print_table(rows: list[dict], out=sys.stdout) -> None:
    print(f"{'T':>6}  {'memory':<10} {'activations (MiB)':>18} {'vs store':>9} {'grad err vs store':>18}", file=out)
    for r in rows:
        print(f"{r['T']:>6}  {r['memory']:<10} {r['activation_bytes'] / 2**20:>18.3f} "
              f"{r['ratio_vs_store']:>8.3f}x {r['grad_rel_err_vs_store']:>18.1e}", file=out)


def cmd_train(args: argparse.Namespace) -> int:
    torch.manual_seed(args.seed)
    args.memory = args.memory or memory_modes(args.cell)[1]
    module = build(args.cell, args.hidden, args.layers, args.backend, args.memory,
                   args.checkpoint_every, args.chrono)
    model = Regressor(module)
    print(f"training {args.cell} (hidden {args.hidden}, {args.layers} layer(s), memory={args.memory}, "
          f"backend={args.backend}{f', truncated BPTT {args.tbptt}' if args.tbptt else ''}) "
          f"on the adding problem, T={args.T}, batch {args.batch}, {args.steps} steps")
    every = max(1, args.steps // 10)
    report = lambda step, loss: print(f"  step {step + 1:>5}  mse {loss:.4f}") if (step + 1) % every == 0 else None
    result = train_adding(model, args.T, args.steps, args.batch, args.lr, args.tbptt, seed=args.seed,
                          callback=report)
    print(f"final mse {result.final_loss:.4f} (predicting the mean scores {ADDING_BASELINE_MSE:.4f}); "
          f"{result.seconds:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            settings = {k: v for k, v in vars(args).items() if k != "func"}
            json.dump({"args": settings, "losses": result.losses, "seconds": result.seconds}, f)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    print("revrnn demo: backends on this machine")
    for name, reason in available_backends("cpu").items():
        print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    print()
    cmd_train(argparse.Namespace(**{**vars(args), "json": None}))
    print(f"\nactivation memory of one forward ({args.cell}, hidden {args.hidden}, batch {args.batch}; "
          "saved tensors, parameters and inputs excluded)")
    print_table(memory_table(args.cell, args.hidden, args.batch, args.lengths, args.backend))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    if args.strategies is None:
        if args.cell in REVERSIBLE:
            args.strategies = [Strategy.parse(s) for s in ("bptt", "tbptt:50", "reversible")]
        else:
            args.strategies = [Strategy.parse(s) for s in ("bptt", "tbptt:50", "ckpt:sqrt", "revolve:8")]
            if args.cell in REVERSIBLE_OF:
                args.strategies.append(Strategy.reversible())
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("revrnn: --device cuda but CUDA is not available")
    make = cell_factory(args.cell, args.input_size, args.hidden, args.layers, args.backend)
    for strategy in args.strategies:  # fail before the sweep, naming the bad strategy
        try:
            make(strategy)
        except ValueError as e:
            raise SystemExit(f"revrnn: --strategies: {e}") from None
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SystemExit(f"revrnn: --out {out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    progress = None
    if not args.no_progress:
        progress = lambda it: tqdm(it, desc="profile", unit="run", file=sys.stderr)  # noqa: E731
    if args.process:
        return _profile_processes(args, device, out, progress)
    report = memory_sweep(make, args.T, args.batch, args.input_size, args.strategies, device=device,
                          dtype=getattr(torch, args.dtype), repeats=args.repeats, seed=args.seed, progress=progress)
    report.env.update(model=f"{args.cell} (input {args.input_size}, hidden {args.hidden}, {args.layers} layer(s), "
                      f"backend {args.backend})")
    print(report.table())
    report.to_csv(out / "mem.csv")
    report.to_json(out / "mem.json")
    with open(out / "env.json", "w") as f:
        json.dump(report.env, f, indent=1)
    report.plot(out / "mem_vs_T.png")
    print(f"wrote {out / 'mem.csv'}, {out / 'mem.json'}, {out / 'env.json'}, {out / 'mem_vs_T.png'}")
    return 0


def _profile_processes(args: argparse.Namespace, device: torch.device, out: Path, progress) -> int:
    """``revrnn profile --process``: every configuration in a fresh process (process peaks)."""
    from .profile.process import TORCH_MODELS, Run, sweep, table
    sizes = dict(batch=args.batch, input_size=args.input_size, hidden=args.hidden, layers=args.layers,
                 device=device.type, dtype=args.dtype, threads=args.threads, seed=args.seed)
    twin = f"torch.{CELLS[args.cell].__name__}"
    runs = []
    for T in args.T:
        runs += [Run(REVERSIBLE_OF.get(args.cell, args.cell) if s.kind == "reversible" else args.cell, s.text, T=T,
                     backend=args.backend, stream=stream, **sizes)
                 for s in args.strategies if s.kind != "tbptt" for stream in ((False, True) if args.stream else (False,))]
        if twin in TORCH_MODELS:
            runs += [Run(twin, s, T=T, **sizes) for s in ("bptt", "ckpt", "save_on_cpu")]
    peaks = sweep(runs, progress=progress)
    print(table(peaks))
    with open(out / "process.json", "w") as f:
        json.dump([p.to_dict() for p in peaks], f, indent=1)
    print(f"wrote {out / 'process.json'}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = float(text) if "e" in text.lower() else int(text)  # 1e3 as in --T 1e3,4e3
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value != int(value) or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(value)


def _count(text: str) -> int:
    return 0 if text.strip() == "0" else _positive_int(text)


def _int_list(text: str) -> list[int]:
    return [_positive_int(v) for v in text.split(",")]


def _strategies(text: str) -> list[Strategy]:
    try:
        return [Strategy.parse(v) for v in text.split(",")]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="revrnn", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def training_args(sp: argparse.ArgumentParser, T: int, steps: int) -> None:
        sp.add_argument("--cell", choices=sorted(CELLS), default="gru")
        sp.add_argument("--hidden", type=_positive_int, default=32)
        sp.add_argument("--layers", type=_positive_int, default=1)
        sp.add_argument("--T", type=_positive_int, default=T, help="sequence length")
        sp.add_argument("--steps", type=_positive_int, default=steps, help="optimiser steps")
        sp.add_argument("--batch", type=_positive_int, default=64)
        sp.add_argument("--lr", type=float, default=1e-2)
        sp.add_argument("--memory", choices=["store", "recompute", "reversible"], default=None,
                        help=f"default: reversible for {'/'.join(sorted(REVERSIBLE))}, recompute otherwise")
        sp.add_argument("--checkpoint-every", type=_positive_int, default=None)
        sp.add_argument("--tbptt", type=_positive_int, default=None, help="truncated BPTT window")
        sp.add_argument("--backend", choices=["auto", "reference", "triton", "cuda", "cpu"], default="auto")
        sp.add_argument("--chrono", type=float, default=None, help="chrono init with this t_max")
        sp.add_argument("--seed", type=int, default=0)
        sp.add_argument("--threads", type=_positive_int, default=1,
                        help="CPU threads (default 1: small recurrent steps are faster on one)")

    t = sub.add_parser("train", help="train a cell on the adding problem")
    training_args(t, T=100, steps=500)
    t.add_argument("--json", help="write the loss curve to this file")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="train briefly, then print a memory table of the strategies")
    training_args(d, T=50, steps=300)
    d.add_argument("--lengths", type=_int_list, default=[250, 1000, 4000],
                   help="comma-separated sequence lengths for the table")
    d.set_defaults(func=cmd_demo, chrono=None)

    pr = sub.add_parser("profile", help="memory, time and gradient error of training strategies vs T",
                        description="Train one step per (strategy, T); write a table, mem.csv, mem.json, "
                                    "env.json and mem_vs_T.png (memory vs T, log-log, and time vs BPTT).")
    pr.add_argument("--cell", choices=sorted(CELLS), default="gru")
    pr.add_argument("--input-size", type=_positive_int, default=16)
    pr.add_argument("--hidden", type=_positive_int, default=64)
    pr.add_argument("--layers", type=_positive_int, default=1)
    pr.add_argument("--batch", type=_positive_int, default=16)
    pr.add_argument("--T", type=_int_list, default=[100, 200, 400, 800, 1600],
                    help="comma-separated sequence lengths (1e3 notation accepted)")
    pr.add_argument("--strategies", type=_strategies, default=None,
                    help="comma-separated: bptt, tbptt:K, ckpt:sqrt, ckpt:K, revolve:SLOTS, reversible "
                         "(default: all that apply to --cell, with tbptt:50 and revolve:8)")
    pr.add_argument("--backend", choices=["auto", "reference", "triton", "cuda", "cpu"], default="auto")
    pr.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    pr.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    pr.add_argument("--repeats", type=_count, default=3, help="timed runs per configuration (median)")
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--out", default="profile", help="directory for the files (created)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    pr.add_argument("--threads", type=_positive_int, default=1, help="CPU threads")
    pr.add_argument("--process", action="store_true",
                    help="each configuration in a fresh process: the process peak (resident set on CPU, the "
                         "allocator's peak on CUDA) above its baseline, beside the accounting, with torch.nn's "
                         "twin of the cell (plain, torch.utils.checkpoint, save_on_cpu); writes process.json")
    pr.add_argument("--stream", action="store_true",
                    help="with --process, also each strategy under the streamed loss (revrnn.stream_backward)")
    pr.set_defaults(func=cmd_profile)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
