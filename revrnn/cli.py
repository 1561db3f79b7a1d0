"""The ``revrnn`` command: ``train`` a cell on a long-range task, ``profile`` the memory of training
strategies against sequence length, ``demo`` the library end to end."""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from . import __version__, available_backends, init
from . import nn as rnn
from .demo import Settings as DemoSettings
from .demo import __doc__ as demo_doc
from .profile import Strategy, cell_factory, memory_sweep
from .profile.sweep import REVERSIBLE_OF
from .tasks import TASKS
from .trainer import CELLS as TRAINABLE
from .trainer import Config, Trainer

CELLS = rnn.MODULES
#: the modules whose memory modes are "store" and "reversible"
REVERSIBLE = set(REVERSIBLE_OF.values())


def default_memory(cell: str) -> str:
    """A module's memory strategy unless told: reversible where it can, else recompute."""
    modes = TRAINABLE[cell].memory_modes
    return next(m for m in ("reversible", "recompute", "store") if m in modes)


def train_config(args: argparse.Namespace) -> Config:
    """The run ``revrnn train``'s flags describe."""
    cell_kwargs = {"memory": args.memory or default_memory(args.cell)}
    if args.memory and args.memory not in TRAINABLE[args.cell].memory_modes:
        raise SystemExit(f"revrnn: --memory {args.memory} is not available for --cell {args.cell}; "
                         f"choose from {', '.join(TRAINABLE[args.cell].memory_modes)}")
    for flag in ("checkpoint_every", "checkpoint_slots", "forget_bits", "dropout", "slice_dim"):
        if getattr(args, flag) is not None:
            cell_kwargs[flag] = getattr(args, flag)
    mode, window = ("tbptt", args.tbptt) if args.tbptt else ("stream", args.stream) if args.stream else ("full", None)
    try:
        return Config(task=args.task, T=args.T, cell=args.cell, hidden=args.hidden, layers=args.layers,
                      backend=args.backend, cell_kwargs=cell_kwargs, mode=mode, window=window,
                      steps=args.steps or 1000, batch=args.batch, lr=args.lr, weight_decay=args.weight_decay,
                      clip=args.clip or None, seed=args.seed, eval_every=args.eval_every or max(1, (args.steps or 1000) // 10),
                      log_every=args.log_every, save_every=args.save_every, aux=args.aux, aux_window=args.aux_window,
                      aux_weight=args.aux_weight, aux_pretrain=args.aux_pretrain, budget=args.budget,
                      curriculum=args.curriculum)
    except ValueError as e:
        raise SystemExit(f"revrnn: {e}") from None


def cmd_train(args: argparse.Namespace) -> int:
    reason = available_backends("cpu").get(args.backend) if args.backend != "auto" else None
    if reason is not None:
        raise SystemExit(f"revrnn: --backend {args.backend} is not available here: {reason}")
    try:
        if args.resume:
            trainer = Trainer.resume(args.resume, steps=args.steps, progress=not args.no_progress)
        else:
            trainer = Trainer(train_config(args), args.out, progress=not args.no_progress)
            if args.chrono:
                init.chrono_(trainer.net.rnn, args.chrono)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as e:
        raise SystemExit(f"revrnn: {e}") from None
    cfg, task = trainer.cfg, trainer.task
    how = {"full": "full backpropagation", "stream": f"the streamed loss (chunks of {cfg.window or 'sqrt(T)'})",
           "tbptt": f"truncated backpropagation (windows of {cfg.window})"}[cfg.mode]
    print(f"training {cfg.cell} (hidden {cfg.hidden}, {cfg.layers} layer(s), {cfg.cell_kwargs}, backend "
          f"{cfg.backend}) on {task.name}, T={task.T}, batch {cfg.batch}, steps {trainer.step}..{cfg.steps}, with {how}")
    trainer.run()
    final = trainer.evaluate("valid")
    print(f"valid: loss {final['loss']:.4f} per scored step, {task.metric} {final[task.metric]:.4f} "
          f"(without memory: loss {task.baseline:.4f}); {trainer.seconds:.1f} s training")
    if trainer.out is not None:
        print(f"wrote {trainer.out / 'metrics.jsonl'}, {trainer.out / 'curve.png'}, {trainer.out / 'checkpoint.pt'}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import benchmark
    from .benchmark import report, results

    if "report" in args.suites:
        if len(args.suites) > 1:
            raise SystemExit("revrnn: bench report takes no suite; run the suites first, then the report")
        folder = Path(args.results or results.results_dir())
        readme = Path(args.readme or results.REPO / "README.md")
        try:
            before, after = report.render(readme, folder)
        except (OSError, ValueError) as e:
            raise SystemExit(f"revrnn: {e}") from None
        if args.check:
            if before != after:
                raise SystemExit(f"revrnn: {readme}'s performance section is not what {folder} holds: "
                                 "run `revrnn bench report`")
            print(f"{readme} is up to date with {folder}")
            return 0
        readme.write_text(after)
        print(f"wrote the performance section of {readme} from {len(report.recorded(folder))} result(s) in {folder}")
        return 0
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("revrnn: --device cuda but CUDA is not available")
    size = "quick" if args.quick else "full" if args.full else "default"
    try:
        written = benchmark.bench(args.suites or list(benchmark.DEFAULT), device, size, args.only,
                                  Path(args.out) if args.out else None, progress=not args.no_progress)
    except ValueError as e:
        raise SystemExit(f"revrnn: {e}") from None
    except ImportError as e:
        raise SystemExit(f"revrnn: {e} (pip install 'revrnn[bench]')") from None
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run
    print("revrnn demo; backends on this machine:")
    for name, reason in available_backends("cpu").items():
        print(f"  {name:<10} {'available' if reason is None else 'unavailable: ' + reason}")
    print()
    run(Path(args.out), DemoSettings(T=args.T, steps=args.steps, hidden=args.hidden, memory_T=args.memory_T,
                                     memory_repeats=args.memory_repeats, threads=args.threads),
        progress=not args.no_progress)
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


class _Help(argparse.RawDescriptionHelpFormatter):
    """Help that shows each option's default where it has one (the epilog keeps its lines)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not any(action.default is v for v in (None, False, argparse.SUPPRESS)) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


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
    p.add_argument("--version", action="version", version=f"revrnn {__version__} (torch {torch.__version__})")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train any cell on a task (copy, adding, denoise, digits, chars ...)",
                       formatter_class=_Help,
                       description="Train a recurrent model on a task that needs no download, with full, "
                                   "streamed or truncated backpropagation; writes metrics.jsonl, curve.png and "
                                   "checkpoint.pt to --out (resume with --resume).",
                       epilog="tasks:\n" + "\n".join(f"  {n:<9} {c.summary}" for n, c in TASKS.items()))
    t.add_argument("--task", choices=list(TASKS), default="copy", help="what to learn (listed below)")
    t.add_argument("--T", type=_positive_int, default=None, help="sequence length (default: the task's)")
    t.add_argument("--cell", choices=sorted(TRAINABLE), default="gru", help="the recurrent module")
    t.add_argument("--hidden", type=_positive_int, default=128, help="units per layer")
    t.add_argument("--layers", type=_positive_int, default=1, help="recurrent layers")
    t.add_argument("--memory", choices=["store", "recompute", "reversible"], default=None,
                   help=f"the module's memory strategy (default: reversible for {'/'.join(sorted(REVERSIBLE))}, "
                        "recompute otherwise)")
    t.add_argument("--checkpoint-every", type=_positive_int, default=None, help="recompute: steps between kept states")
    t.add_argument("--checkpoint-slots", type=_positive_int, default=None, help="recompute: at most this many kept states")
    t.add_argument("--forget-bits", type=int, default=None, help="reversible cells: bits forgotten per step")
    t.add_argument("--dropout", type=float, default=None, help="dropout between layers")
    t.add_argument("--slice-dim", type=_positive_int, default=None,
                   help="sequence-to-sequence tasks: the encoder units attention reads (default: all)")
    how = t.add_mutually_exclusive_group()
    how.add_argument("--stream", type=_positive_int, nargs="?", const=0, default=None, metavar="CHUNK",
                     help="the streamed loss (exact gradients, outputs never all in memory); chunk steps, sqrt(T) "
                          "when not given")
    how.add_argument("--tbptt", type=_positive_int, default=None, metavar="WINDOW", help="truncated backpropagation")
    t.add_argument("--aux", default=None, metavar="r:LENGTH|p:LENGTH",
                   help="an auxiliary loss (Trinh et al. 2018): reconstruct the LENGTH steps before a random "
                        "anchor (r) or predict those after it (p), with a 2-layer LSTM decoder")
    t.add_argument("--aux-window", type=_positive_int, default=None,
                   help="steps before the anchor the auxiliary gradient enters (default: all)")
    t.add_argument("--aux-weight", type=float, default=1.0, help="the auxiliary loss's weight")
    t.add_argument("--aux-pretrain", type=int, default=0, help="steps on the auxiliary loss alone first")
    t.add_argument("--budget", type=float, default=0.0,
                   help="g-LSTM: λ of the computational budget (mean time-gate openness) added to the loss")
    t.add_argument("--curriculum", default=None, metavar="STEP:T,...",
                   help="g-LSTM: a temporal curriculum, e.g. 0:64,500:128,1000:256 (sequence length from each "
                        "step on; the last is the run's T, the time gates stretched as it grows)")
    t.add_argument("--steps", type=_positive_int, default=None,
                   help="optimiser steps (default 1000; with --resume, the new total)")
    t.add_argument("--batch", type=_positive_int, default=32, help="sequences per step")
    t.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    t.add_argument("--weight-decay", type=float, default=0.0, help="AdamW weight decay")
    t.add_argument("--clip", type=float, default=1.0, help="gradient norm clip (0: none)")
    t.add_argument("--eval-every", type=_positive_int, default=None, help="steps between validations (steps/10)")
    t.add_argument("--log-every", type=_positive_int, default=10, help="steps per training-loss row")
    t.add_argument("--save-every", type=_positive_int, default=None, help="steps between checkpoints (and at the end)")
    t.add_argument("--backend", choices=["auto", "reference", "triton", "cuda", "cpu"], default="auto",
                   help="where the recurrence runs")
    t.add_argument("--chrono", type=float, default=None, help="chrono initialisation with this t_max")
    t.add_argument("--seed", type=int, default=0, help="initialisation, data and dropout")
    t.add_argument("--threads", type=_positive_int, default=1, help="CPU threads")
    t.add_argument("--out", default=None, help="directory for metrics.jsonl, curve.png, checkpoint.pt")
    t.add_argument("--resume", default=None, metavar="DIR", help="continue the run saved in DIR")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    d = sub.add_parser("demo", help="the headline in about two minutes: a reversible GRU learns, and its memory",
                       formatter_class=_Help, description=demo_doc)
    defaults = DemoSettings()
    d.add_argument("--T", type=_positive_int, default=defaults.T, help="the copy task's length")
    d.add_argument("--steps", type=_positive_int, default=defaults.steps, help="training steps")
    d.add_argument("--hidden", type=_positive_int, default=defaults.hidden, help="units")
    d.add_argument("--memory-T", type=_positive_int, default=defaults.memory_T,
                   help="sequence length of the memory comparison")
    d.add_argument("--memory-repeats", type=_positive_int, default=defaults.memory_repeats,
                   help="fresh processes per memory configuration (the median peak is shown)")
    d.add_argument("--threads", type=_positive_int, default=1, help="CPU threads")
    d.add_argument("--out", default="revrnn-demo", help="directory for demo.png, demo.json and the run")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_demo)

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

    from .benchmark import DEFAULT, SUITES
    b = sub.add_parser("bench", help="benchmark suites against their baselines; `bench report` renders the README's "
                                     "performance section", formatter_class=_Help,
                       description="Run benchmark suites (default: " + ", ".join(DEFAULT) + "), each against its "
                                   "strongest baselines in the\nsame run, and write each one's JSON, markdown and PNG "
                                   "(default folder: the checkout's bench/results).\n`revrnn bench report` renders "
                                   "the README's performance section from the recorded results.",
                       epilog="suites:\n" + "\n".join(
                           textwrap.fill(f"{n:<11} {text}", 96, initial_indent="  ", subsequent_indent=" " * 14)
                           for n, text in [*((n, t) for n, (_, t) in SUITES.items()),
                                           ("report", "the README's performance section from the recorded results")]))
    b.add_argument("suites", nargs="*", choices=[*SUITES, "report", []], metavar="SUITE",
                   help="suites to run (listed below), or report")
    size = b.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="toy shapes, few rounds: a smoke test")
    size.add_argument("--full", action="store_true", help="the shapes the targets are stated at (longer)")
    b.add_argument("--only", nargs="+", metavar="CASE",
                   help="kernels and sequence: the catalog's cases (lstm, gru, revgru-k3 ...) and the families' "
                        "groups (sparse) to run")
    b.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    b.add_argument("--out", default=None, help="folder for the results (default: the checkout's bench/results)")
    b.add_argument("--threads", type=_positive_int, default=os.cpu_count() or 1, help="CPU threads")
    b.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    b.add_argument("--results", default=None, help="report: the folder of recorded results")
    b.add_argument("--readme", default=None, help="report: the README to update")
    b.add_argument("--check", action="store_true", help="report: only say whether the README is up to date")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
