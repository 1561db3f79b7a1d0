"""The revrnn command."""
from __future__ import annotations

import json

import pytest
import torch

import revrnn
from revrnn.cli import TRAINABLE, main


@pytest.mark.parametrize("cell", sorted(TRAINABLE))
def test_train_every_cell_writes_metrics_curve_and_checkpoint(cell, tmp_path, capsys):
    assert main(["train", "--task", "adding", "--cell", cell, "--T", "6", "--steps", "3", "--batch", "4",
                 "--hidden", "6", "--out", str(tmp_path), "--no-progress", "--log-every", "1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["config"]["cell"] == cell and rows[0]["task"] == "adding"
    train = [r for r in rows[1:] if r["split"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and all(r["loss"] == r["loss"] for r in train)
    assert (tmp_path / "curve.png").exists() and (tmp_path / "checkpoint.pt").exists()
    assert "valid: loss" in capsys.readouterr().out


def test_auxiliary_loss(tmp_path):
    assert main(["train", "--task", "pdigits", "--T", "128", "--steps", "3", "--batch", "4", "--hidden", "8",
                 "--tbptt", "32", "--aux", "r:20", "--aux-window", "40", "--aux-pretrain", "1", "--log-every", "1",
                 "--no-progress", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows[1:] if r["split"] == "train"]
    assert train[0]["loss"] is None and train[1]["loss"] > 0 and all(r["aux_loss"] > 0 for r in train)


def test_glstm_budget_and_curriculum(tmp_path):
    assert main(["train", "--task", "adding", "--cell", "glstm", "--curriculum", "0:20,2:40", "--budget", "0.1",
                 "--steps", "3", "--batch", "4", "--hidden", "8", "--log-every", "1", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["T"] for r in rows[1:] if r["split"] == "train"] == [20, 20, 40]


def test_sequence_to_sequence(capsys):
    assert main(["train", "--task", "reverse", "--T", "6", "--cell", "revgru", "--slice-dim", "4", "--hidden", "8",
                 "--steps", "2", "--batch", "3", "--no-progress"]) == 0
    assert "valid: loss" in capsys.readouterr().out


def test_truncated_bptt_and_chrono(capsys):
    assert main(["train", "--T", "30", "--steps", "2", "--batch", "3", "--hidden", "4", "--no-progress",
                 "--tbptt", "4", "--chrono", "9", "--memory", "store"]) == 0
    assert "truncated backpropagation (windows of 4)" in capsys.readouterr().out


def test_streamed_language_model_resumes(tmp_path, capsys):
    argv = ["train", "--task", "chars", "--T", "16", "--batch", "3", "--hidden", "8", "--cell", "revgru",
            "--stream", "5", "--no-progress", "--log-every", "1", "--out", str(tmp_path)]
    assert main(argv + ["--steps", "2"]) == 0
    assert main(["train", "--resume", str(tmp_path), "--steps", "4", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "the streamed loss (chunks of 5)" in out and "steps 2..4" in out
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows[1:] if r["split"] == "train"] == [1, 2, 3, 4]


def test_demo_learns_measures_and_plots(tmp_path, capsys):
    """A tiny demo: the training run, the three process peaks (the reversible step's lowest) and
    the plot."""
    assert main(["demo", "--T", "21", "--steps", "4", "--hidden", "8", "--memory-T", "3000", "--no-progress",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "recall accuracy" in out and "RevGRU, reversible" in out
    data = json.loads((tmp_path / "demo.json").read_text())
    peaks = {r["label"]: r["peak_bytes"] for r in data["memory"]}
    assert all(r["error"] is None for r in data["memory"]) and len(peaks) == 3
    assert peaks["RevGRU, reversible"] < peaks["torch.nn.GRU"] / 3
    assert (tmp_path / "demo.png").stat().st_size > 1000 and (tmp_path / "copy" / "metrics.jsonl").exists()


def test_reversible_training_with_truncated_bptt(capsys):
    assert main(["train", "--cell", "revlstm", "--T", "30", "--steps", "2", "--batch", "3", "--hidden", "4",
                 "--tbptt", "8", "--no-progress"]) == 0
    assert "'memory': 'reversible'" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["train", "--cell", "revgru", "--memory", "recompute"],
                                  ["train", "--cell", "gru", "--memory", "reversible"]])
def test_memory_strategy_must_fit_the_cell(argv):
    with pytest.raises(SystemExit, match="not available for --cell"):
        main(argv)


@pytest.mark.parametrize("argv", [["train", "--T", "0"], ["train", "--cell", "rnn"], ["demo", "--steps", "x"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage: revrnn" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "-1"], "revrnn: lr must be a positive finite number, got -1.0"),
    (["train", "--cell", "revgru", "--hidden", "5"], "revrnn: hidden_size must be even"),
    (["train", "--backend", "cuda"], "revrnn: --backend cuda is not available here"),
    (["train", "--task", "copy", "--T", "12"], "revrnn: T must be an int >= 21, got 12"),
    (["train", "--resume", "/nonexistent/run"], "revrnn: "),
    (["train", "--aux", "q:5"], "revrnn: aux must be r:LENGTH or p:LENGTH"),
])
def test_bad_flags_end_in_one_line(argv, message):
    with pytest.raises(SystemExit) as e:
        main(argv + ["--steps", "1", "--no-progress"])
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"revrnn {revrnn.__version__} (torch {torch.__version__})"
