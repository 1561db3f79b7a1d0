"""The revrnn command."""
from __future__ import annotations

import json

import pytest

from revrnn.cli import CELLS, main, memory_table


@pytest.mark.parametrize("cell", sorted(CELLS))
def test_train_runs_and_writes_the_loss_curve(cell, tmp_path, capsys):
    out = tmp_path / "curve.json"
    assert main(["train", "--cell", cell, "--T", "6", "--steps", "3", "--batch", "4",
                 "--hidden", "6", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert len(data["losses"]) == 3 and all(v == v for v in data["losses"])
    assert "final mse" in capsys.readouterr().out


def test_truncated_bptt_and_chrono(capsys):
    assert main(["train", "--T", "9", "--steps", "2", "--batch", "3", "--hidden", "4",
                 "--tbptt", "4", "--chrono", "9", "--memory", "store"]) == 0
    assert "truncated BPTT 4" in capsys.readouterr().out


def test_memory_table_recompute_saves_memory():
    rows = memory_table("gru", hidden=8, batch=2, lengths=[16, 64], backend="reference")
    by = {(r["T"], r["memory"]): r for r in rows}
    for T in (16, 64):
        assert by[T, "recompute"]["activation_bytes"] < by[T, "store"]["activation_bytes"]
        assert by[T, "recompute"]["grad_rel_err_vs_store"] < 1e-5  # exact up to float32 rounding
    assert by[64, "store"]["activation_bytes"] == 4 * by[16, "store"]["activation_bytes"]


def test_memory_table_reversible_saves_memory():
    rows = memory_table("revgru", hidden=8, batch=2, lengths=[64], backend="reference")
    by = {r["memory"]: r for r in rows}
    assert by["reversible"]["activation_bytes"] * 10 < by["store"]["activation_bytes"]
    assert by["reversible"]["grad_rel_err_vs_store"] < 1e-5


def test_reversible_training_with_truncated_bptt(capsys):
    assert main(["train", "--cell", "revlstm", "--T", "9", "--steps", "2", "--batch", "3", "--hidden", "4",
                 "--tbptt", "4"]) == 0
    assert "memory=reversible" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["train", "--cell", "revgru", "--memory", "recompute"],
                                  ["train", "--cell", "gru", "--memory", "reversible"]])
def test_memory_strategy_must_fit_the_cell(argv):
    with pytest.raises(SystemExit, match="not available for --cell"):
        main(argv)


@pytest.mark.parametrize("argv", [["train", "--T", "0"], ["train", "--cell", "rnn"], ["demo", "--lengths", "10,x"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage: revrnn" in capsys.readouterr().err
