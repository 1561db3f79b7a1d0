"""What every benchmark script here shares: the plain-text table and the repository's commit for
the JSON it writes. Imported by the scripts of this folder (run as ``python bench/<script>.py``,
which puts this folder on ``sys.path``)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def align(head: list[str], lines: list[list[str]]) -> str:
    """Columns padded to their widest entry, two spaces apart."""
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *lines])


def git(*cmd: str) -> str | None:
    """Output of a git command in the repository, or None (no git, not a checkout)."""
    try:
        done = subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def commit() -> dict[str, object]:
    """The commit and whether tracked files differ from it."""
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": None if dirty is None else bool(dirty)}


def meta() -> dict[str, object]:
    """What a result file records about where and when it was measured: the machine, its cores,
    Python and torch versions, the date (UTC) and the commit."""
    import torch
    return {"machine": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **commit()}
