"""Smoke test of bench/cpu_cells.py at a toy size: JSON rows with finite times, every candidate of
every case, ratios over the case's baseline."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

import revrnn
from utils import load_script

REASON = revrnn.available_backends()["cpu"]
pytestmark = pytest.mark.skipif(REASON is not None and os.environ.get("REVRNN_REQUIRE_EXT") != "1",
                                reason=f"backend 'cpu' unavailable: {REASON}")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "cpu_cells.py"


def test_quick_run(tmp_path):
    bench = load_script(SCRIPT)
    out = tmp_path / "cpu.json"
    threads = torch.get_num_threads()
    try:
        bench.main(["--quick", "--threads", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    result = json.loads(out.read_text())
    assert result["meta"]["torch"] == torch.__version__ and result["meta"]["threads"] == 1
    by_case: dict[str, list[dict]] = {}
    for r in result["rows"]:
        by_case.setdefault(r["case"], []).append(r)
        assert math.isfinite(r["ms"]) and r["ms"] > 0 and math.isfinite(r["ratio"])
    assert [r["impl"] for r in by_case["lstm"]] == ["torch.nn", "revrnn cpu", "revrnn reference", "GEMM floor"]
    assert by_case["lstm"][0]["ratio"] == 1.0
    eager = [rows for rows in by_case.values() if rows[0]["impl"] == "revrnn reference"]
    assert eager and all([r["impl"] for r in rows] == ["revrnn reference", "revrnn cpu"] for rows in eager)
