"""``revrnn demo``: the library's headline in about two minutes on a laptop-class CPU.

1. A reversible GRU learns the copy-memory task (recall ten symbols after a delay) from scratch.
2. One training step of a long sequence, each configuration in fresh processes (the median of
   three by default: the peak moves from process to process with glibc's heap): the process's
   peak memory above its baseline for torch.nn's GRU, revrnn's GRU storing its activations, and
   the reversible GRU reconstructing them (revrnn's own accounting is not used: these are
   resident-set peaks, what the operating system sees).
3. ``demo.png`` (learning curve and memory bars) and ``demo.json`` in the output directory.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .profile.process import Peak, Run, measure
from .trainer import Config, Trainer, draw_curve

#: (label, model, strategy) of the memory comparison
CONFIGURATIONS = (("torch.nn.GRU", "torch.GRU", "bptt"), ("revrnn GRU, activations stored", "gru", "bptt"),
                  ("RevGRU, reversible", "revgru", "reversible"))


@dataclass
class Settings:
    T: int = 40  # the copy task's length (a delay of T - 20 steps)
    steps: int = 1500
    hidden: int = 128
    memory_T: int = 10_000  # the memory comparison's sequence length (B16, 64 inputs, 128 units)
    memory_repeats: int = 3  # fresh processes per configuration, the median peak shown
    threads: int | None = None


def run(out: Path, settings: Settings = Settings(), progress: bool = True, say=print) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    say(f"1. a reversible GRU ({settings.hidden} units) learns copy memory: recall 10 symbols after "
        f"{settings.T - 20} blank steps")
    cfg = Config(task="copy", T=settings.T, cell="revgru", hidden=settings.hidden, steps=settings.steps, batch=32,
                 lr=5e-3, eval_every=max(1, settings.steps // 10), log_every=max(1, settings.steps // 50), seed=0)
    trainer = Trainer(cfg, out / "copy", progress=progress)
    trainer.run()
    final = trainer.evaluate("valid", batches=8)
    say(f"   recall accuracy {final['accuracy']:.1%} (chance 12.5%), loss {final['loss']:.3f} "
        f"(without memory {trainer.task.baseline:.3f}), {trainer.seconds:.0f} s")

    n = settings.memory_repeats
    each = f"the median of {n} fresh processes" if n > 1 else "in a fresh process"
    say(f"\n2. memory of one training step at T={settings.memory_T:,} (batch 16, 64 inputs, 128 units), each {each}")
    peaks: list[tuple[str, Peak]] = []
    for label, model, strategy in CONFIGURATIONS:
        peak = measure(Run(model, strategy, T=settings.memory_T, threads=settings.threads),
                       repeats=settings.memory_repeats)
        peaks.append((label, peak))
        shown = "out of memory" if peak.oom else peak.error or f"{peak.peak_bytes / 2 ** 20:8.0f} MiB"
        say(f"   {label:<28} {shown}")
    first = peaks[0][1].peak_bytes
    last = peaks[-1][1].peak_bytes
    if first and last:
        say(f"   the reversible GRU's step peaks {first / last:.0f}x below torch.nn's")

    result = {"copy": {"config": cfg.__dict__, "valid": final, "seconds": trainer.seconds,
                       "baseline": trainer.task.baseline},
              "memory": [{"label": label, **peak.to_dict()} for label, peak in peaks]}
    (out / "demo.json").write_text(json.dumps(result, indent=1, default=str))
    _plot(trainer.history, trainer.task.baseline, peaks, out / "demo.png", settings)
    say(f"\nwrote {out / 'demo.png'}, {out / 'demo.json'} and the run in {out / 'copy'}")
    return result


def _plot(history: list[dict], baseline: float, peaks: list[tuple[str, Peak]], path: Path, s: Settings) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    draw_curve(left, history, baseline)
    left.set(ylabel="cross-entropy per recalled symbol", title=f"RevGRU learns copy memory (T={s.T})")
    labels = [label for label, _ in peaks]
    values = [(p.peak_bytes or 0) / 2 ** 20 for _, p in peaks]
    right.barh(labels, values, color=["tab:grey", "tab:orange", "tab:green"][:len(values)])
    for i, v in enumerate(values):
        right.text(v, i, f" {v:,.0f} MiB", va="center")
    right.set(xlabel="peak resident memory above baseline (MiB)", title=f"one training step, T={s.memory_T:,}")
    right.set_xlim(0, max(values + [1]) * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
