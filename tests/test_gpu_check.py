"""bench/gpu_check.py's own logic, without a GPU: the dry run lists every step and writes the
report files; a step that fails or is missing is a row, not a crash."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu_check  # noqa: E402


def test_dry_run_writes_every_step(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--dry-run", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    names = [s["name"] for s in report["steps"]]
    assert names == ["machine", "versions", "build CUDA extension", "pytest -m gpu", "sequence benchmark",
                     "kernels benchmark"]
    assert report["dry_run"] and all(s["rc"] is None for s in report["steps"])
    assert sum(s["limit_s"] for s in report["steps"]) <= 9 * 60  # 15 device minutes: room for a re-run
    assert "-m gpu" in report["steps"][3]["command"] and report["steps"][2]["env"] == {"REVRNN_CUDA": "1"}
    assert "| pytest -m gpu |" in (tmp_path / "gpu_check.md").read_text()
    from revrnn.benchmark import names as case_names
    for step in report["steps"][4:]:  # the benchmarks name cases that exist, on the GPU
        assert "revrnn bench" in step["command"] and "--device cuda" in step["command"]
        picked = step["command"].split("--only ")[1].split(" --")[0].split()
        assert picked and set(picked) <= set(case_names())


def test_failing_and_missing_steps_are_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "steps", lambda out: [
        ("fails", [sys.executable, "-c", "raise SystemExit(3)"], {}, 30),
        ("missing", ["no-such-command-here"], {}, 30),
        ("slow", [sys.executable, "-c", "import time; time.sleep(5)"], {}, 1)])
    report = gpu_check.run(tmp_path, dry_run=False)
    assert [s["rc"] for s in report["steps"]] == [3, "missing", "timeout"]
