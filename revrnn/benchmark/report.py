"""``revrnn bench report``: the README's performance section, rendered from the recorded results
(``bench/results/<suite>_<device>.json``, written by ``revrnn bench``; quick runs are left out).
Tables per result file (one per kind of comparison), one line per case: its device, its baseline
and every candidate's time (or peak) with its ratio over the baseline; a missed target is marked. The section sits
between two markers in the README; ``--check`` says whether it is up to date."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from .results import load, us_per_step

BEGIN = "<!-- revrnn bench report: begin (generated; edit bench/results, then run `revrnn bench report`) -->"
END = "<!-- revrnn bench report: end -->"
ORDER = ("sequence", "kernels", "strategies", "memory")
#: per suite: how a row's number is shown
UNIT = {"sequence": ("ms", lambda r: r.get("ms")), "kernels": ("µs/step", us_per_step),
        "strategies": ("peak MiB", lambda r: r.get("peak_mib")), "memory": ("peak MiB", lambda r: r.get("peak_mib"))}


def recorded(folder: Path) -> list[dict[str, Any]]:
    """Every non-quick result of ``revrnn bench`` in ``folder``, in suite order then file name."""
    found = []
    for path in sorted(Path(folder).glob("*.json")):
        try:
            result = load(path)
        except (OSError, ValueError):
            continue
        if isinstance(result, dict) and result.get("suite") in ORDER and result["meta"].get("size") != "quick":
            found.append({**result, "path": path})
    return sorted(found, key=lambda r: ORDER.index(r["suite"]))


def number(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3g}" if value < 100 else f"{value:.0f}"


def cell(row: dict[str, Any], suite: str) -> str:
    if row.get("error"):
        return "failed"
    if row.get("oom"):
        return "OOM"
    text = number(UNIT[suite][1](row))
    if row.get("ratio") is not None and row["impl"] != row["baseline"]:
        text += f" ({row['ratio']:.2f}×)"
    if row.get("meets") is False:
        text += " **missed**"
    return text


def where(meta: dict[str, Any]) -> str:
    n = meta["threads"]
    return f"CPU, {n} thread{'' if n == 1 else 's'}" if meta["device_type"] == "cpu" else meta["device"]


def tables(result: dict[str, Any]) -> list[str]:
    """One table per run of cases with the same candidates (a suite mixes comparisons of
    different kinds), a line per case: device, baseline, then each candidate's number."""
    suite, rows = result["suite"], result["rows"]
    cases = list(dict.fromkeys(r["case"] for r in rows))
    by = {(r["case"], r["impl"]): r for r in rows}
    impls = {case: [r["impl"] for r in rows if r["case"] == case] for case in cases}
    groups: list[list[str]] = []
    for case in cases:
        if groups and impls[groups[-1][0]] == impls[case]:
            groups[-1].append(case)
        else:
            groups.append([case])
    out = []
    for group in groups:
        head = ["case", "device", "baseline", *impls[group[0]]]
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for case in group:
            line = [case, where(result["meta"]), by[case, impls[case][0]]["baseline"],
                    *(cell(by[case, i], suite) for i in impls[case])]
            lines.append("| " + " | ".join(x.replace("|", "\\|") for x in line) + " |")
        out.append("\n".join(lines))
    return out


def processes(rows: list[dict[str, Any]]) -> str:
    """What a peak row is the median of, where its suite ran several fresh processes per run."""
    n = max((len(r.get("peak_mib_each", ())) for r in rows), default=0)
    return f" Each peak is the median of {n} fresh processes (all in `peak_mib_each`)." if n > 1 else ""


def section(results: list[dict[str, Any]], root: Path) -> str:
    """The README's generated section for ``results`` (paths shown relative to ``root``)."""
    out = [BEGIN, ""]
    if not results:
        out += ["No recorded results yet: run `revrnn bench`.", ""]
    for result in results:
        meta, suite = result["meta"], result["suite"]
        path = Path(result["path"])
        rel = path.relative_to(root) if path.is_relative_to(root) else path
        date = datetime.datetime.fromisoformat(meta["date"]).date().isoformat()
        flags = "" if meta.get("size") == "default" else f" --{meta.get('size')}"
        only = f" --only {' '.join(meta['only'])}" if meta.get("only") else ""
        unit = UNIT[suite][0]
        out += [f"**`revrnn bench {suite}{flags}{only}`** on {meta['device']}, {meta['threads']} threads, "
                f"{date}, commit {str(meta.get('commit'))[:7]}{' (uncommitted changes)' if meta.get('dirty') else ''}, "
                f"torch {meta['torch']} (`{rel}`, plot `{rel.with_suffix('.png')}`). Each cell: {unit}, and in "
                f"brackets the ratio over the case's baseline.{processes(result['rows'])}", ""]
        for t in tables(result):
            out += [t, ""]
    out.append(END)
    return "\n".join(out)


def render(readme: Path, folder: Path) -> tuple[str, str]:
    """The README's text now and with its section rendered from ``folder``'s results. Raises
    ValueError if the README lacks the markers."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise ValueError(f"{readme} has no generated section: add the lines\n{BEGIN}\n{END}")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return text, head + section(recorded(folder), readme.resolve().parent) + tail
