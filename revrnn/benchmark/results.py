"""A suite's result: its rows with where, when and on what they were measured (:func:`meta`),
written as JSON (the record), markdown and a PNG of the ratios, and read back by the report."""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import torch

#: the repository holding this package when it is a checkout (editable install), else None
REPO = Path(__file__).resolve().parents[2]


def git(*cmd: str) -> str | None:
    """Output of a git command in the repository, or None (no git, not a checkout)."""
    if not (REPO / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> dict[str, object]:
    """The commit and whether tracked files other than recorded results differ from it (None
    outside a checkout)."""
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/results")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if dirty is None else bool(dirty)}


def results_dir() -> Path:
    """Where results go unless told: the checkout's ``bench/results``, else ``./bench-results``."""
    return REPO / "bench" / "results" if (REPO / ".git").exists() else Path("bench-results")


def device_name(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model} ({os.cpu_count()} cores)"


def meta(device: torch.device = torch.device("cpu")) -> dict[str, Any]:
    """Where and when: the device, threads, library versions, the commit (and whether tracked
    files differed from it) and the date (UTC)."""
    import revrnn

    try:
        import triton
        triton_version = triton.__version__
    except Exception:  # absent, or failing to import: not part of the measurement then
        triton_version = None
    return {"device": device_name(device), "device_type": device.type, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "triton": triton_version,
            "revrnn": revrnn.__version__, "cuda": torch.version.cuda if device.type == "cuda" else None,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            **commit(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def stem(suite: str, device: torch.device, quick: bool) -> str:
    """A result's file name without extension: suite, device type (and index-free GPU name)."""
    where = "cpu" if device.type == "cpu" else slug(torch.cuda.get_device_name(device))
    return f"{suite}_{where}{'_quick' if quick else ''}"


def align(head: list[str], lines: list[list[str]]) -> str:
    """Columns padded to their widest entry, two spaces apart."""
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *lines])


def fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"


def target_text(row: dict[str, Any]) -> str:
    if row.get("target") is None:
        return ""
    op, bound = row["target"]
    return f"{op} {bound:g}" + ("" if row.get("meets") is None else (" ok" if row["meets"] else " MISS"))


def us_per_step(row: dict[str, Any]) -> float | None:
    return None if row.get("ms_per_step") is None else row["ms_per_step"] * 1e3


#: a suite's columns: (heading, row -> text); every suite has its case, impl, ratio and target
COLUMNS: dict[str, list[tuple[str, Any]]] = {
    "time": [("ms/step", lambda r: fmt(r.get("ms_per_step"), 4)), ("ms", lambda r: fmt(r.get("ms"), 4))],
    "kernels": [("µs/step", lambda r: fmt(us_per_step(r), 4))],
    "peaks": [("peak MiB", lambda r: "OOM" if r.get("oom") else fmt(r.get("peak_mib"), 4)),
              ("accounted MiB", lambda r: fmt(r.get("accounted_mib"), 4)),
              ("step ms", lambda r: fmt(r.get("ms"), 4))],
}


def columns(rows: list[dict[str, Any]]) -> list[tuple[str, Any]]:
    kind = rows[0].get("columns", "time") if rows else "time"
    return [("case", lambda r: r["case"]), ("impl", lambda r: r["impl"]), *COLUMNS[kind],
            ("ratio", lambda r: fmt(r.get("ratio"), 3)), ("target", target_text),
            ("notes", notes)]


def notes(row: dict[str, Any]) -> str:
    """The row's error, else what it measured besides time (the g-LSTM's open fractions)."""
    return row.get("error") or ", ".join(f"{k}={row[k]:.3f}" for k in ("open_fraction", "skipped_fraction") if k in row)


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned text."""
    cols = columns(rows)
    return align([h for h, _ in cols], [[f(r) for _, f in cols] for r in rows])


def markdown(rows: list[dict[str, Any]]) -> str:
    """The rows as a markdown table."""
    cols = columns(rows)
    lines = ["| " + " | ".join(h for h, _ in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(f(r).replace("|", "\\|") for _, f in cols) + " |" for r in rows]
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], title: str, path: Path) -> None:
    """Horizontal bars of each row's ratio over its baseline (log scale), a line at 1 (a bare
    matplotlib Figure: no pyplot state)."""
    from matplotlib.figure import Figure

    shown = [r for r in rows if r.get("ratio")]
    fig = Figure(figsize=(9, 0.28 * len(shown) + 1.5))
    ax = fig.subplots()
    ax.barh(range(len(shown)), [r["ratio"] for r in shown],
            color=["tab:red" if r.get("meets") is False else "tab:gray" if r["impl"] == r["baseline"] else "tab:blue"
                   for r in shown])
    ax.set_yticks(range(len(shown)), [f"{r['case']} · {r['impl']}" for r in shown], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("ratio over the case's baseline (grey); red: target missed")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write_json(suite: str, rows: list[dict[str, Any]], info: dict[str, Any], out: Path, name: str) -> Path:
    """``<name>.json`` in ``out``: the suite, ``info`` (:func:`meta` and the run's settings) and the rows."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"suite": suite, "meta": info, "rows": rows}, indent=1))
    return path


def write(suite: str, rows: list[dict[str, Any]], info: dict[str, Any], out: Path, name: str) -> list[Path]:
    """``<name>.json``, ``.md`` and ``.png`` in ``out``; their paths."""
    paths = [write_json(suite, rows, info, out, name), out / f"{name}.md", out / f"{name}.png"]
    head = (f"# `revrnn bench {suite}` on {info['device']}\n\n{info['date']}, commit {info['commit']}, "
            f"torch {info['torch']}, {info['threads']} threads\n\n")
    paths[1].write_text(head + markdown(rows) + "\n")
    plot(rows, f"revrnn bench {suite}: {info['device']}, {info['date'][:10]}", paths[2])
    return paths


def load(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
