"""The sweep's PNG: memory vs T (log-log, fitted slopes, theory dashed) and time vs BPTT."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .track import MiB

if TYPE_CHECKING:
    from .sweep import Report


def plot_report(report: "Report", path, title: str | None = None) -> None:
    """Draw ``report`` to ``path`` as a PNG. Uses a bare ``Figure`` (no pyplot, no display, no
    HTML), so the caller's matplotlib backend is left alone."""
    from matplotlib import rcParams
    from matplotlib.figure import Figure

    slopes = report.slopes()
    cuda = report.cuda
    fig = Figure(figsize=(13, 5.2))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.35, 1]})
    colours = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(report.strategies()):
        colour = colours[i % len(colours)]
        rows = [r for r in report.rows if r.strategy == name]
        done = [r for r in rows if not r.oom and report.memory(r)]
        truncated = any(r.truncation is not None for r in rows)
        label = name + (f"  slope {slopes[name]:.2f}" if name in slopes else "") + ("  (biased gradient)" if truncated else "")
        if done:
            left.plot([r.T for r in done], [report.memory(r) / MiB for r in done], marker="o", color=colour,
                      label=label, linestyle="--" if truncated else "-")
            theory = [r for r in done if r.theory_bytes]
            if theory:
                left.plot([r.T for r in theory], [r.theory_bytes / MiB for r in theory], ":", color=colour, alpha=0.6)
            timed = [r for r in done if r.time_vs_bptt is not None]
            if timed:
                right.plot([r.T for r in timed], [r.time_vs_bptt for r in timed], marker="o", color=colour, label=name,
                           linestyle="--" if truncated else "-")
            if rows[0].strategy.startswith(("ckpt", "revolve")):  # the schedule's count, bwd = 2 fwd
                right.plot([r.T for r in done], [(r.step_evaluations + 2) / 3 for r in done], ":", color=colour,
                           alpha=0.6)
        ooms = [r for r in rows if r.oom]
        if ooms:
            top = max((report.memory(r) for r in report.rows if report.memory(r)), default=MiB) / MiB
            left.plot([r.T for r in ooms], [top] * len(ooms), "x", color=colour, markersize=10,
                      label=f"{name} out of memory" if not done else None)
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("sequence length T")
    left.set_ylabel("CUDA peak above baseline (MiB)" if cuda else "held for backward, peak (MiB)")
    left.set_title("Activation memory vs T (dotted: theory)" if not cuda else "Peak memory vs T (dotted: theory)")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)
    right.set_xscale("log")
    right.axhline(1.0, color="grey", linewidth=0.8)
    right.set_xlabel("sequence length T")
    right.set_ylabel("step time / BPTT step time")
    right.set_title("Step time vs BPTT, same run (dotted: (evals/step + 2) / 3)")
    right.grid(True, which="both", alpha=0.3)
    if right.get_legend_handles_labels()[0]:  # nothing timed with repeats=0
        right.legend(fontsize=8)
    env = report.env
    fig.suptitle(title or f"{env.get('model', '')} batch {env.get('batch')}, {env.get('dtype')}, "
                 f"{env.get('gpu', env.get('cpu', ''))} ({env.get('device')}), torch {env.get('torch')}")
    fig.text(0.01, 0.01, "\n".join(report.advice()[:1 + len(report.strategies())]), fontsize=7, family="monospace",
             va="bottom")
    fig.tight_layout(rect=(0, 0.04 + 0.018 * len(report.strategies()), 1, 0.95))
    fig.savefig(path, dpi=120)
