"""revrnn bench (revrnn/benchmark/): the timers, the baselines computing what the candidates do,
the executor's GEMM switch, each suite at toy sizes, the result files, and the README's section
generated from the recorded results."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import revrnn
from revrnn.backends import get_backend
from revrnn.benchmark import SUITES, kernels, peaks, report, results, sequence
from revrnn.benchmark.suite import Comparison, run
from revrnn.benchmark.timing import Candidate, interleave, rows
from revrnn.cells import cases
from revrnn.cli import main

ROOT = Path(__file__).resolve().parents[1]
CPU = revrnn.available_backends()["cpu"]
needs_cpu = pytest.mark.skipif(CPU is not None and os.environ.get("REVRNN_REQUIRE_EXT") != "1",
                               reason=f"backend 'cpu' unavailable: {CPU}")


def case(name: str):
    return next(c for _, c in cases() if c.name == name)


def test_help_lists_every_suite(capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in (*SUITES, "report"):
        assert f"\n  {name} " in text


@pytest.mark.parametrize("argv, message", [(["bench", "nosuch"], "invalid choice"),
                                           (["bench", "report", "kernels"], "takes no suite"),
                                           (["bench", "kernels", "--only", "gru1"], "unknown case(s) gru1;"),
                                           (["bench", "memory", "--only", "gru"], "not of memory")])
def test_bad_bench_arguments(argv, message, capsys):
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert message in str(done.value.code) + capsys.readouterr().err


def test_interleave_rotates_warms_up_and_keeps_errors():
    calls: dict[str, list[int]] = {"a": [], "b": []}

    def failing(i: int) -> None:
        raise RuntimeError("no such kernel")

    timed = interleave([Candidate("a", calls["a"].append, steps=4), Candidate("b", calls["b"].append),
                        Candidate("c", failing)], warmup=2, repeats=3, device=torch.device("cpu"))
    assert calls["a"] == calls["b"] == [0, 1, 2, 3, 4]  # one index per round, the same for every candidate
    assert [len(t.times_ms) for t in timed] == [3, 3, 0]
    out = rows(timed, suite="x", case="y")
    assert out[0]["ratio"] == 1.0 and out[0]["baseline"] == "a"
    assert out[1]["ratio"] == pytest.approx(out[1]["ms_per_step"] / out[0]["ms_per_step"])
    assert out[0]["ms_per_step"] == pytest.approx(out[0]["ms"] / 4)
    assert out[2]["error"] == "RuntimeError: no such kernel" and out[2]["ratio"] is None


def test_targets_are_checked():
    t = interleave([Candidate("base", lambda i: None), Candidate("x", lambda i: sum(range(20000)), target=("<=", 1e-9)),
                    Candidate("y", lambda i: sum(range(20000)), target=(">=", 1.0))], 0, 3, torch.device("cpu"))
    out = rows(t)
    assert out[1]["meets"] is False and out[2]["meets"] is True


@needs_cpu
def test_gemms_switch_off_and_back_on():
    """With the executor's GEMMs off its chunk gives another result (the GEMMs were skipped, not
    run), and once they are on again the very same call gives the reference's result."""
    s = kernels.Setup(case("gru"), (5, 3, 4, 8), torch.device("cpu"))
    cpu, ref = get_backend("cpu", torch.device("cpu")), get_backend("reference", torch.device("cpu"))
    args = (s.cell, s.p, s.extras, s.chunks[0], s.states[0], True)
    module = kernels.executor_module(cpu, torch.device("cpu"))
    with kernels.gemms_off(module):
        off = cpu.forward_chunk(*args)[0]
    with pytest.raises(RuntimeError), kernels.gemms_off(module):
        raise RuntimeError  # the switch is restored when the timed call raises
    on, want = cpu.forward_chunk(*args)[0], ref.forward_chunk(*args)[0]
    torch.testing.assert_close(on, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(off, want, rtol=1e-3, atol=1e-3)
    assert module.set_gemms(True) is True


@needs_cpu
def test_kernels_suite_through_pytest_benchmark(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the CPU's backends: no Triton
    done = subprocess.run([sys.executable, "-m", "revrnn", "bench", "kernels", "--quick", "--only", "gru1-after",
                           "--no-progress", "--threads", "1", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "kernels_cpu_quick.json").read_text())
    assert result["suite"] == "kernels" and result["meta"]["threads"] == 1 and result["meta"]["size"] == "quick"
    assert (tmp_path / "kernels_cpu_quick.md").read_text().count("| GRU variant=1") == 10
    assert (tmp_path / "kernels_cpu_quick.png").stat().st_size > 0
    by = {(r["case"].split()[-1], r["impl"]): r for r in result["rows"]}
    for direction in ("forward", "backward"):
        names = [impl for d, impl in by if d == direction]
        assert names == ["GEMMs alone", "bytes floor", "reference", "cpu", "cpu pointwise alone"]
        for impl in names:
            r = by[direction, impl]
            assert math.isfinite(r["ms_per_step"]) and r["ms_per_step"] > 0 and r["rounds"] >= 2, r
        assert by[direction, "bytes floor"]["bytes_per_step"] > 0


@needs_cpu
def test_bytes_per_step_follow_the_layout():
    """GRU forward: xp (3H) and rec (3H) in, h before and after, act and y: per row."""
    s = kernels.Setup(case("gru"), (4, 2, 3, 8), torch.device("cpu"))
    runner = get_backend("cpu", torch.device("cpu")).runner_for(s.cell)
    H, A = 8, runner.acts * 8
    assert s.step_bytes(runner, False) == 2 * 4 * (3 * H + 3 * H + 2 * H + A + H)
    assert s.step_bytes(get_backend("reference", torch.device("cpu")).runner_for(s.cell), False) is None


@pytest.mark.parametrize("name", ["lstm", "gru1-after", "glstm-t1000", "nru"])
def test_eager_and_compiled_loops_compute_the_module(name):
    """The loops the sequence suite times compute what the module computes."""
    torch.manual_seed(0)
    m = case(name).make(5, 8, backend="reference")
    x = torch.randn(6, 3, 5)
    out, state = m(x)
    states = state if isinstance(state, tuple) else (state,)
    for compiled in (False, True):
        loop_out, loop_state = sequence.step_loop(m, compiled)(x)
        torch.testing.assert_close(loop_out, out, rtol=1e-5, atol=1e-6)
        for a, b in zip(loop_state, states):
            torch.testing.assert_close(a, b[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, per_row", [
    # multiply-adds per sequence row: projection, its two gradients; per step forward, d h, d W
    ("lstm", lambda I, H: 3 * I * 4 * H + 3 * H * 4 * H),
    ("lstm-proj-quarter", lambda I, H: 3 * I * 4 * H + 3 * (H // 4) * 4 * H + 3 * H * (H // 4)),
    ("gru1-after", lambda I, H: 3 * I * H + 3 * H * 3 * H),
    ("kafgru-d20", lambda I, H: 3 * I * 3 * H + 3 * H * 3 * H),  # the KAF's coefficients are no GEMM
    ("nru", lambda I, H: 3 * I * 8 + 3 * 72 * 8 + 3 * 72 * 72),
])
def test_gemm_floor_runs_the_cells_gemms(name, per_row):
    """The floor does the multiply-adds of the cell's GEMMs in one training step, no more."""
    from torch.utils.flop_counter import FlopCounterMode

    T, B, I, H = 4, 3, 16, 8
    m = case(name).make(I, H, backend="reference")
    floor = sequence.gemm_floor(m, torch.randn(T, B, I))
    with FlopCounterMode(display=False) as count:
        floor(0)
    assert count.get_total_flops() == 2 * T * B * per_row(I, H)


def test_checkpointed_twin_computes_the_twin():
    torch.manual_seed(0)
    twin = torch.nn.GRU(5, 8)
    x = torch.randn(10, 3, 5, requires_grad=True)
    out, h = sequence.checkpointed(twin, 10)(x)
    want_out, want_h = twin(x)
    torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(h, want_h)


@needs_cpu
def test_sequence_suite_rows():
    """Every baseline in its place; the compiled backends here (under the test suite, Triton's
    interpreter too) beside them."""
    cpu = torch.device("cpu")
    found = run(sequence.comparisons(cpu, "quick", ["gru", "gru1-after", "revgru-k3", "sparse"]), cpu, progress=False)
    compiled = [f"revrnn {name}" for name in sequence.compiled_backends(cpu)]
    assert "revrnn cpu" in compiled
    by: dict[str, list[dict]] = {}
    for r in found:
        by.setdefault(r["case"], []).append(r)
        assert "error" not in r and math.isfinite(r["ms"]) and r["ms"] > 0, r
    gru = by["GRU T=6 B=3 I=5 H=7"]
    ours = [x for c in compiled for x in (c, *(["revrnn triton persistent"] if c == "revrnn triton" else []))]
    assert [r["impl"] for r in gru] == ["torch.nn", "torch.nn + checkpoint", *ours, "eager loop",
                                       "torch.compile loop", "GEMM floor"]
    assert gru[0]["ratio"] == 1.0 and all(r["baseline"] == "torch.nn" for r in gru)
    assert all(r["target"] is None for r in found)  # targets are checked at the full size, where they are stated
    variant = by["GRU variant=1 T=6 B=3 I=5 H=7"]
    assert [r["impl"] for r in variant] == ["eager loop", *compiled, "torch.compile loop", "GEMM floor"]
    rev = by["RevGRU vs torch.nn.GRU T=20 B=3 I=5 H=8"]
    assert [r["impl"] for r in rev] == ["torch.nn", *(f"{c}{m}" for c in compiled for m in ("", " store")),
                                        "eager loop"]
    sparse = [rows for case, rows in by.items() if case.startswith("GLSTM ~10% open")]
    assert [[r["impl"] for r in rows] for rows in sparse] == [
        [f"{c.split()[1]} sparse", f"{c.split()[1]} dense", "projection GEMMs"] for c in compiled]
    assert all(0 < r["open_fraction"] < 0.5 and r["skipped_fraction"] > 0.5 for rows in sparse for r in rows[:1])


def test_peak_rows_are_ratios_over_the_first(monkeypatch):
    from revrnn.profile import process

    runs = peaks.strategy_runs(30, 1, torch.device("cpu"))
    fake = {r: process.Peak(r, peak_bytes=(i + 1) * 2 ** 20, saved_peak_bytes=2 ** 19, step_s=0.01 * (i + 1))
            for i, r in enumerate(runs)}
    asked = []

    def measure(r, timeout=None, repeats=1):
        asked.append(repeats)
        return fake[r]
    monkeypatch.setattr(process, "measure", measure)
    fake[runs[1]].extra["peaks_bytes"] = [2 ** 20, 2 * 2 ** 20, 3 * 2 ** 20]
    out = peaks.measure(runs, {"suite": "strategies", "case": "c"}, 10.0, lambda: None, repeats=3)
    assert asked == [3] * len(runs) and out[1]["peak_mib_each"] == [1, 2, 3]
    assert [r["ratio"] for r in out] == pytest.approx(range(1, len(runs) + 1))
    assert [r["time_ratio"] for r in out] == pytest.approx(range(1, len(runs) + 1))
    assert out[0]["impl"] == "torch.GRU bptt" and all(r["baseline"] == "torch.GRU bptt" for r in out)
    assert out[2]["accounted_mib"] == 0.5


def test_memory_suite_in_fresh_processes(tmp_path):
    written = revrnn.benchmark.bench(["memory"], torch.device("cpu"), "quick", out=tmp_path, progress=False,
                                     echo=lambda text: None)
    result = json.loads(written[0].read_text())
    names = [r["impl"] for r in result["rows"]]
    assert names[0] == "torch.GRU bptt" and "revgru reversible forget_bits=3" in names
    for r in result["rows"]:
        assert "error" not in r and r["peak_mib"] > 0 and r["ms"] > 0, r
    assert peaks.REPEATS["quick"] == 1 and peaks.REPEATS["default"] == peaks.REPEATS["full"] == 3
    assert all(c.settings["repeats"] == 3 for c in peaks.memory(torch.device("cpu"), "default"))


def fake_result(folder: Path, suite: str, size: str = "default") -> Path:
    meta = {**results.meta(torch.device("cpu")), "suite": suite, "size": size, "only": None}
    rows = [{"case": "GRU T=1", "impl": "torch.nn", "baseline": "torch.nn", "ms": 10.0, "ratio": 1.0},
            {"case": "GRU T=1", "impl": "revrnn cpu", "baseline": "torch.nn", "ms": 12.5, "ratio": 1.25,
             "target": ["<=", 1.0], "meets": False}]
    path = folder / f"{suite}_cpu{'_quick' if size == 'quick' else ''}.json"
    path.write_text(json.dumps({"suite": suite, "meta": meta, "rows": rows}))
    return path


def test_report_renders_and_checks(tmp_path, capsys):
    folder = tmp_path / "results"
    folder.mkdir()
    fake_result(folder, "sequence")
    fake_result(folder, "kernels", size="quick")  # quick runs are not recorded results
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{report.BEGIN}\nstale\n{report.END}\n\nafter\n")
    argv = ["bench", "report", "--results", str(folder), "--readme", str(readme)]
    with pytest.raises(SystemExit, match="not what"):
        main([*argv, "--check"])
    assert main(argv) == 0
    text = readme.read_text()
    assert text.startswith("# x\n") and text.endswith("\nafter\n") and "stale" not in text
    assert "| GRU T=1 | CPU, " in text and "| torch.nn | 10 | 12.5 (1.25×) **missed** |" in text
    assert "revrnn bench sequence" in text and "revrnn bench kernels" not in text
    assert "median of" not in text  # one process per run: nothing to say
    assert main([*argv, "--check"]) == 0
    readme.write_text("no markers")
    with pytest.raises(SystemExit, match="no generated section"):
        main(argv)


def test_report_says_what_a_peak_is_the_median_of():
    rows = [{"peak_mib": 2.0, "peak_mib_each": [1.0, 2.0, 5.0]}, {"peak_mib": 3.0}]
    assert report.processes(rows) == " Each peak is the median of 3 fresh processes (all in `peak_mib_each`)."
    assert report.processes([{"peak_mib": 2.0}]) == ""


def test_readme_is_generated_from_the_recorded_results():
    """The README's performance section is what bench/results holds (`revrnn bench report`)."""
    before, after = report.render(ROOT / "README.md", ROOT / "bench" / "results")
    assert before == after, "run `revrnn bench report` after recording results"
    assert report.recorded(ROOT / "bench" / "results"), "no recorded result of revrnn bench"


def test_results_name_the_run():
    info = results.meta(torch.device("cpu"))
    assert info["torch"] == torch.__version__ and info["revrnn"] == revrnn.__version__
    assert info["device_type"] == "cpu" and info["threads"] == torch.get_num_threads()
    assert info["commit"] is None or len(info["commit"]) == 40
    assert results.stem("kernels", torch.device("cpu"), True) == "kernels_cpu_quick"


def test_a_failed_comparison_is_rows_with_errors():
    def build():
        return [Candidate("ok", lambda i: None), Candidate("bad", lambda i: 1 / 0)]
    out = run([Comparison({"suite": "s", "case": "c"}, build, 0, 2)], torch.device("cpu"), progress=False)
    assert out[1]["error"].startswith("ZeroDivisionError") and out[0]["device"] == "cpu"


def test_both_compiled_modules_have_the_gemm_switch():
    from test_cuda_backend import cuda_module
    from revrnn import _C
    for module in (_C, cuda_module()):
        assert module.set_gemms(True) is True and "pointwise passes alone" in module.set_gemms.__doc__


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_gemms_switch_off_and_back_on():
    if revrnn.available_backends("cuda")["cuda"] is not None:
        pytest.skip(f"backend 'cuda' is unavailable: {revrnn.available_backends('cuda')['cuda']}")
    gpu = torch.device("cuda")
    s = kernels.Setup(case("gru"), (5, 3, 4, 8), gpu)
    args = (s.cell, s.p, s.extras, s.chunks[0], s.states[0], True)
    backend = get_backend("cuda", gpu)
    module = kernels.executor_module(backend, gpu)
    with kernels.gemms_off(module):
        off = backend.forward_chunk(*args)[0]
    on, want = backend.forward_chunk(*args)[0], get_backend("reference", gpu).forward_chunk(*args)[0]
    torch.testing.assert_close(on, want, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(off).all() and not torch.allclose(off, want, rtol=1e-3, atol=1e-3)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("suite", ["kernels", "sequence"])
def test_gpu_suites_run(suite, tmp_path):
    """Every candidate of the LSTM's comparisons runs on the GPU (CUDA events, interleaved)."""
    written = revrnn.benchmark.bench([suite], torch.device("cuda"), "quick", ["lstm"], tmp_path, progress=False,
                                     echo=lambda text: None)
    found = json.loads(written[0].read_text())["rows"]
    assert found and all("error" not in r and r["ms"] > 0 for r in found), [r for r in found if "error" in r]
    assert any(r["impl"].startswith(("revrnn triton", "triton")) for r in found)
