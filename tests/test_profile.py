"""The memory profiler: accounting, fitted slopes, gradient errors, OOM rows, and `revrnn profile`."""
from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import revrnn
from revrnn.cli import main
from revrnn.accounting import SavedTensorCounter, activation_bytes
from revrnn.profile import Strategy, cell_factory, memory_sweep, saved_per_step, track


def test_accounting_excludes_parameters_and_inputs_and_counts_a_storage_once():
    w = nn.Parameter(torch.randn(8, 8))
    x = torch.randn(4, 8)
    with SavedTensorCounter([w, x]) as c:
        y = x @ w  # saves x and w: neither is an activation
    assert c.bytes == 0
    a = torch.randn(100, requires_grad=True)
    with SavedTensorCounter() as c:
        h = a * 2  # saves nothing from a (constant factor)
        z = h[:50] * h[50:]  # saves two views of h's one storage
    assert c.bytes == c.peak_bytes == 100 * 4
    with SavedTensorCounter() as c:
        z = torch.tanh(a * 2)  # tanh saves its output: a second storage
        assert c.bytes == 100 * 4
        z.sum().backward()
    assert c.bytes == 0 and c.peak_bytes == 100 * 4  # freed by the backward
    del y


def test_track_measures_forward_and_backward_peak():
    model = revrnn.nn.GRU(4, 8, memory="recompute", checkpoint_every=4)
    x = torch.randn(16, 2, 4)
    with track("cpu", exclude=[model, x]) as m:
        out, h = model(x)
        forward = m.saved_bytes
        (out.sum() + h.sum()).backward()
    assert forward == 4 * 2 * 8 * 4  # four kept states, B=2, H=8, float32
    assert m.saved_peak_bytes > forward  # one chunk's graph, rebuilt in backward
    assert m.saved_bytes == 0 and m.peak_delta_bytes is None
    assert "saved for backward, peak" in m.summary()
    with pytest.raises(TypeError, match="exclude takes tensors and modules, got int"):
        track("cpu", exclude=[3])


@pytest.mark.parametrize("cls, states", [(revrnn.nn.GRU, 1), (revrnn.nn.LSTM, 2)])
def test_saved_per_step_predicts_bptt_growth(cls, states):
    model = cls(5, 12, backend="reference")
    step = saved_per_step(model, batch=3)
    per_step = activation_bytes(model, torch.randn(40, 3, 5)) - activation_bytes(model, torch.randn(20, 3, 5))
    assert per_step == 20 * step.bytes
    assert step.alpha == step.bytes / (3 * 12 * 4)
    assert [t.role for t in step.tensors].count("state") == states
    assert f"alpha = {step.alpha:.2f}" in str(step)


def test_saved_per_step_errors():
    with pytest.raises(TypeError, match="RevGRU keeps no per-step tensors"):
        saved_per_step(revrnn.nn.RevGRU(4, 8))
    with pytest.raises(TypeError, match="module must be a revrnn recurrent module, got Linear"):
        saved_per_step(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="batch must be a positive int, got 0"):
        saved_per_step(revrnn.nn.GRU(4, 8), batch=0)
    with pytest.raises(ValueError, match=r"layer must be an int in \[0, 1\), got 1"):
        saved_per_step(revrnn.nn.GRU(4, 8), layer=1)


def fixed_bits(k):
    def make(strategy):
        return revrnn.nn.RevGRU(4, 16, forget_bits=k, memory=strategy.module_kwargs()["memory"])
    return make


def test_fitted_slopes():
    lens = [64, 256, 1024]
    # the reference backend: the theory column is fitted to its storage layout (per step what
    # autograd saves); the compiled executor keeps less per re-run chunk than that model says
    report = memory_sweep(cell_factory("gru", 4, 16, backend="reference"), lens, 4, 4,
                          ["bptt", "ckpt:sqrt", "revolve:4", "tbptt:16"], repeats=0)
    slopes = report.slopes()
    assert slopes["bptt"] == pytest.approx(1.0, abs=0.02)
    assert slopes["ckpt(sqrt)"] == pytest.approx(0.5, abs=0.1)
    assert slopes["revolve(4)"] == pytest.approx(0.0, abs=0.02)
    assert slopes["tbptt(16)"] == pytest.approx(0.0, abs=0.02)
    for r in report.rows:  # the theory column, fitted from BPTT's first point, tracks the measurement
        if r.strategy == "revolve(4)":  # slots + two steps' residuals: a bound
            assert report.memory(r) <= r.theory_bytes
        else:
            assert r.theory_bytes == pytest.approx(report.memory(r), rel=0.05)
    # Reversible: without forgetting nothing grows; with forgetting the buffer grows, far below BPTT.
    flat = memory_sweep(fixed_bits(0), [64, 1024], 4, 4, ["reversible"], repeats=0)
    assert flat.slopes()["reversible"] == pytest.approx(0.0, abs=0.02)
    forgetting = memory_sweep(fixed_bits(3), [64, 1024], 4, 4, ["reversible"], repeats=0)
    assert forgetting.slopes()["reversible"] < 0.9
    bptt_1024 = next(r for r in report.rows if r.strategy == "bptt" and r.T == 1024)
    assert forgetting.rows[-1].saved_peak_bytes < bptt_1024.saved_peak_bytes / 20


def test_gradient_errors_exact_vs_truncated():
    report = memory_sweep(cell_factory("lstm", 3, 6), [40], 2, 3,
                          ["bptt", "ckpt:7", "revolve:3", "tbptt:10", "reversible"], dtype=torch.float64)
    err = {r.strategy: r.grad_rel_err_vs_bptt for r in report.rows}
    assert err["bptt"] == 0
    assert err["ckpt(7)"] < 1e-12 and err["revolve(3)"] < 1e-12
    assert err["reversible"] < 1e-9  # against RevLSTM's own store
    assert err["tbptt(10)"] > 1e-3  # the truncation bias
    rows = {r.strategy: r for r in report.rows}
    assert rows["tbptt(10)"].truncation == 10 and rows["bptt"].truncation is None
    assert rows["revolve(3)"].step_evaluations == revrnn.nn.LSTM(3, 6, memory="recompute",
                                                                 checkpoint_slots=3).checkpoint_schedule(40).factor
    assert all(r.time_vs_bptt is not None and r.fwd_ms > 0 for r in report.rows)
    assert rows["reversible"].model == "RevLSTM" and rows["bptt"].model == "LSTM"


class Hungry(nn.Module):
    """Runs out of memory from T = 32 on."""

    def __init__(self):
        super().__init__()
        self.rnn = revrnn.nn.GRU(2, 4)

    def forward(self, x, state=None):
        if x.shape[0] >= 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 TiB")
        return self.rnn(x, state)


def test_out_of_memory_is_a_row():
    report = memory_sweep(lambda s: Hungry(), [16, 32, 64], 2, 2, ["bptt"], repeats=0)
    assert [r.oom for r in report.rows] == [False, True, True]
    assert "out of memory" in report.rows[1].note and "not run" in report.rows[2].note
    assert "OOM" in report.table()
    with pytest.raises(ValueError, match="boom"):  # anything else is an error, not a row
        memory_sweep(lambda s: (_ for _ in ()).throw(ValueError("boom")), [4], 1, 1, ["bptt"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(strategies=[]), "strategies must not be empty"),
    (dict(strategies=["bptt", "bptt"]), "strategies must be distinct"),
    (dict(seq_lens=[0]), "seq_lens must be a non-empty list of positive ints, got \\[0\\]"),
    (dict(batch_size=0), "batch_size must be a positive int, got 0"),
    (dict(strategies=["ckpt:x"]), "expected an integer after ':', got 'x'"),
    (dict(strategies=["tbptt"]), "strategy 'tbptt' needs k"),
    (dict(strategies=["bptt:3"]), "strategy 'bptt' takes no k"),
    (dict(strategies=["revolve:0"]), "k must be a positive int, got 0"),
    (dict(strategies=["adjoint"]), "strategy kind must be one of .* got 'adjoint'"),
])
def test_sweep_argument_errors(kwargs, match):
    args = dict(make_model=cell_factory("gru", 2, 4), seq_lens=[4], batch_size=1, input_size=2, strategies=["bptt"])
    with pytest.raises(ValueError, match=match):
        memory_sweep(**{**args, **kwargs})


def test_cell_factory_errors():
    with pytest.raises(ValueError, match="cell must be one of"):
        cell_factory("transformer", 2, 4)
    with pytest.raises(ValueError, match="needs cell gru, lstm, revgru or revlstm, got 'mgu'"):
        cell_factory("mgu", 2, 4)(Strategy.reversible())
    with pytest.raises(ValueError, match="'revolve\\(4\\)' is not available for RevGRU"):
        cell_factory("revgru", 2, 4)(Strategy.revolve(4))


def test_profile_command_writes_files(tmp_path, capsys):
    out = tmp_path / "prof"
    assert main(["profile", "--T", "8,1.6e1", "--hidden", "6", "--batch", "2", "--input-size", "3",
                 "--repeats", "1", "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "log-log slope of memory vs T: bptt" in printed and "Pick the fastest" in printed
    with open(out / "mem.csv") as f:
        rows = list(csv.DictReader(f))
    strategies = ["bptt", "tbptt(50)", "ckpt(sqrt)", "revolve(8)", "reversible"]
    assert [r["strategy"] for r in rows] == strategies * 2 and [r["T"] for r in rows] == ["8"] * 5 + ["16"] * 5
    data = json.loads((out / "mem.json").read_text())
    assert len(data["rows"]) == 10 and data["slopes"]["bptt"] == pytest.approx(1.0, abs=0.05)
    assert json.loads((out / "env.json").read_text())["device"] == "cpu"
    assert (out / "mem_vs_T.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv, match", [
    (["--strategies", "bptt,magic"], "strategy kind must be one of"),
    (["--strategies", "tbptt"], "strategy 'tbptt' needs k"),
    (["--T", "0"], "expected a positive integer, got '0'"),
    (["--T", "1.55e1"], "expected a positive integer, got .1.55e1."),
    (["--cell", "mgu", "--strategies", "reversible"], "needs cell gru, lstm, revgru or revlstm"),
    (["--cell", "revgru", "--strategies", "ckpt"], "is not available for RevGRU"),
])
def test_profile_command_errors(argv, match, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["profile", "--no-progress", "--out", str(tmp_path), *argv])
    assert e.value.code != 0
    message = str(e.value.code) if isinstance(e.value.code, str) else capsys.readouterr().err
    assert re.search(match, message), message


def test_profile_out_must_be_a_directory(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit, match="exists and is not a directory"):
        main(["profile", "--no-progress", "--out", str(tmp_path / "file"), "--T", "4"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sweep_reports_allocator_peaks():
    report = memory_sweep(cell_factory("gru", 16, 128), [256, 1024], 32, 16, ["bptt", "ckpt:sqrt", "revolve:8"],
                          device="cuda", repeats=1)
    assert report.env["device"].startswith("cuda") and "gpu" in report.env
    rows = {(r.strategy, r.T): r for r in report.rows}
    for r in report.rows:
        assert r.peak_delta_bytes > 0 and r.peak_reserved_bytes >= r.peak_delta_bytes
        assert r.grad_rel_err_vs_bptt < 1e-4
    assert rows["bptt", 1024].peak_delta_bytes > 2 * rows["bptt", 256].peak_delta_bytes
    # The projected inputs and their gradient are O(T) on the device for every strategy (the
    # engine materialises both whole), so the peak falls by less than the accounted activations.
    assert rows["revolve(8)", 1024].peak_delta_bytes < rows["bptt", 1024].peak_delta_bytes
    assert rows["revolve(8)", 1024].saved_peak_bytes < rows["bptt", 1024].saved_peak_bytes / 20


def test_plot_without_timings(tmp_path):
    report = memory_sweep(cell_factory("gru", 2, 4), [4, 8], 1, 2, ["bptt", "revolve:2"], repeats=0)
    assert all(r.fwd_ms is None and r.time_vs_bptt is None for r in report.rows)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report.plot(tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 0


# -- process peaks (revrnn.profile.process) ---------------------------------------------------
from revrnn.profile.process import Peak, Run, measure  # noqa: E402
from utils import load_script  # noqa: E402

needs_proc = pytest.mark.skipif(not __import__("os").path.exists("/proc/self/clear_refs"), reason="needs /proc")


@needs_proc
def test_process_peak_sees_what_the_accounting_misses():
    """A fresh process's peak covers the outputs and every temporary, beyond what is saved for
    backward: for full BPTT it is at least the accounting; the streamed loss needs less."""
    bptt = measure(Run("gru", "bptt", T=400, batch=8, input_size=4, hidden=32, threads=1))
    stream = measure(Run("gru", "bptt", T=400, batch=8, input_size=4, hidden=32, threads=1, stream=True,
                         generated=True))
    assert bptt.error is None and stream.error is None, (bptt.error, stream.error)
    assert bptt.peak_bytes >= bptt.saved_peak_bytes > 0
    assert bptt.baseline_bytes > 0 and bptt.input_bytes == 400 * 8 * 4 * 4 and stream.input_bytes == 0
    assert stream.peak_bytes < bptt.peak_bytes and stream.saved_peak_bytes is None
    assert bptt.step_s > 0 and bptt.loss is not None


@needs_proc
def test_process_rows_for_torch_baselines_and_reversible_buffers():
    rows = {s: measure(Run("torch.GRU", s, T=64, batch=4, input_size=4, hidden=8, threads=1))
            for s in ("bptt", "ckpt", "save_on_cpu")}
    assert all(r.error is None and r.peak_bytes > 0 for r in rows.values()), rows
    rev = measure(Run("revgru", "reversible", T=64, batch=4, input_size=4, hidden=8, threads=1, forget_bits=3))
    assert rev.error is None and 0 < rev.buffer_bits_per_element_step < 32


def test_process_failures_are_rows(monkeypatch):
    """A child's error, the kernel killing it (out of memory) and a timeout are rows, not crashes."""
    import subprocess
    bad = measure(Run("nosuch"))
    assert bad.peak_bytes is None and "model must be one of" in bad.error

    def killed(*args, **kwargs):
        return subprocess.CompletedProcess(args[0], -9, "", "")
    monkeypatch.setattr(subprocess, "run", killed)
    assert measure(Run("gru")).oom

    def slow(*args, **kwargs):
        raise subprocess.TimeoutExpired(args[0], kwargs["timeout"])
    monkeypatch.setattr(subprocess, "run", slow)
    assert "timed out" in measure(Run("gru"), timeout=1).error


def test_repeats_give_the_median_process_and_every_peak(monkeypatch):
    """With ``repeats`` the run whose peak is the median is the result, with every peak beside
    it; a failure in any process is the result; ``repeats`` must be a positive int."""
    import json
    import subprocess
    children = iter([300, 100, 200, 50, None, 70])

    def child(*args, **kwargs):
        peak = next(children)
        if peak is None:
            return subprocess.CompletedProcess(args[0], 1, "", "Traceback\nRuntimeError: boom")
        line = json.dumps({"run": {}, "peak_bytes": peak, "baseline_bytes": 1, "step_s": peak / 1e3})
        return subprocess.CompletedProcess(args[0], 0, line + "\n", "")
    monkeypatch.setattr(subprocess, "run", child)
    median = measure(Run("gru"), repeats=3)
    assert (median.peak_bytes, median.step_s, median.extra["peaks_bytes"]) == (200, 0.2, [300, 100, 200])
    failed = measure(Run("gru"), repeats=3)
    assert failed.peak_bytes is None and "RuntimeError: boom" in failed.error
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="repeats must be a positive int"):
            measure(Run("gru"), repeats=bad)


@needs_proc
def test_peak_is_measured_from_the_reset():
    """The peak is measured from the mark the reset leaves (up to the kernel counters' per-CPU
    slack), and 64 MiB touched after it show. In a fresh process, as every measurement: in this
    one, earlier tests leave a heap whose state decides whether new pages are needed (once the
    64 MiB read 0 here)."""
    code = ("import torch\nfrom revrnn.profile.process import peak_above, reset_peak\n"
            "base = reset_peak()\nbefore = peak_above(base)\nx = torch.ones(16 * 2 ** 20)\n"
            "print(before, peak_above(base))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, after = map(int, done.stdout.split())
    assert before > -2 ** 20
    assert after >= 60 * 2 ** 20


@needs_proc
def test_cli_process_mode(tmp_path, capsys):
    assert main(["profile", "--process", "--stream", "--cell", "gru", "--T", "50", "--hidden", "8",
                 "--input-size", "4", "--batch", "2", "--strategies", "bptt,ckpt", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "process.json").read_text())
    names = [r["name"] for r in rows]
    assert names == ["gru bptt", "gru bptt streamed (√T-step chunks)", "gru ckpt", "gru ckpt streamed (√T-step chunks)",
                     "torch.GRU bptt", "torch.GRU ckpt", "torch.GRU save_on_cpu"], names
    # A configuration this small stays near its baseline, and the kernel's resident-set counters
    # are summed from per-CPU batches (a quarter MiB on two CPUs): within a MiB below zero is a
    # measurement, None is not.
    assert all(r["error"] is None and r["peak_bytes"] is not None and r["peak_bytes"] > -2 ** 20 for r in rows)
    assert "peak MiB" in capsys.readouterr().out


@pytest.mark.parametrize("repeat", ["0", "-2"])
def test_memory_peaks_script_refuses_a_repeat_below_one(repeat, capsys):
    """bench/memory_peaks.py names the bad --repeat before measuring anything."""
    script = load_script(Path(__file__).resolve().parent.parent / "bench" / "memory_peaks.py")
    with pytest.raises(SystemExit):
        script.main(["--quick", "--repeat", repeat])
    assert f"argument --repeat must be >= 1, got {repeat}" in capsys.readouterr().err
