"""Smoke test of bench/triton_cells.py: its smallest group at toy sizes (in Triton's interpreter
without a GPU) writes JSON rows with finite times and ratios."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from utils import load_script

pytest.importorskip("triton")

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "triton_cells.py"


def test_sparse_group_quick(tmp_path):
    bench = load_script(SCRIPT)
    out = tmp_path / "bench.json"
    device = "cuda" if torch.cuda.is_available() else "cpu"
    bench.main(["--device", device, "--quick", "--only", "sparse", "--out", str(out)])

    result = json.loads(out.read_text())
    assert result["meta"]["torch"] == torch.__version__
    rows = result["rows"]
    assert [r["impl"] for r in rows] == ["triton sparse", "triton dense"]
    for r in rows:
        assert "error" not in r, r["error"]
        assert math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0
        assert math.isfinite(r["ratio"])
    assert 0 < rows[0]["open_fraction"] < 0.5 and rows[0]["skipped_fraction"] > 0.5
