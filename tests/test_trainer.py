"""The training loop: the three backpropagation modes, state carry, resume, files, learning."""
from __future__ import annotations

import json

import pytest
import torch

from revrnn import auxiliary
from revrnn.tasks import make
from revrnn.trainer import Config, Trainer
from utils import assert_close_all


def grads(net) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def trainer(**kwargs) -> Trainer:
    cfg = dict(task="copy", T=30, hidden=12, steps=4, batch=5, eval_every=2, log_every=1)
    return Trainer(Config(**(cfg | kwargs)), progress=False)


@pytest.mark.parametrize("cell", ["gru", "lstm", "revgru", "glstm"])
def test_stream_is_the_exact_gradient(cell):
    """mode="stream" gives full backpropagation's loss and gradients (float64: the same
    operations but for chunk-wise sums, so 1e-10 is rounding with a wide margin)."""
    t = trainer(cell=cell, cell_kwargs={"forget_bits": 0} if cell == "revgru" else {})
    t.net.double()
    batch = t.task.batch("train", 0, 5)
    full = t.backward(batch)
    want = grads(t.net)
    t.net.zero_grad(set_to_none=True)
    t.cfg.mode, t.cfg.window = "stream", 7
    assert t.backward(batch) == pytest.approx(full, rel=1e-12)
    assert_close_all(grads(t.net), want, 1e-10)


def test_tbptt_carries_the_state_but_not_the_gradient():
    """The windows' forward is the whole sequence's (the state crosses), and the adding task's
    loss, scored at the last step only, sends gradient into the last window alone: the gradient
    is that of the last window run from the earlier windows' state taken as a constant."""
    t = trainer(task="adding", T=20, mode="tbptt", window=8)
    t.net.double()
    batch = t.task.batch("train", 0, 5)
    x = batch.x.double()
    batch.x, batch.y = x, batch.y.double()
    loss = t.backward(batch)
    got = grads(t.net)
    t.net.zero_grad(set_to_none=True)
    with torch.no_grad():
        _, state = t.net(x[:16])
    out, _ = t.net(x[16:], state, t0=16)
    want_loss = t.task.loss(t.net.head(out), batch.y[16:], batch.scored[16:]) / 5
    want_loss.backward()
    assert loss == pytest.approx(want_loss.item(), rel=1e-12)
    assert_close_all(got, grads(t.net), 1e-12)
    t.net.zero_grad(set_to_none=True)
    t.cfg.mode = "full"
    assert t.backward(batch) == pytest.approx(loss, rel=1e-12)  # the same forward
    assert any(not torch.allclose(g, got[k]) for k, g in grads(t.net).items())  # a longer gradient


def test_language_model_carries_state_between_batches():
    t = trainer(task="chars", T=16, mode="tbptt", window=4)
    t.train_step()
    carried = t.carried
    assert carried is not None and not carried.requires_grad
    t.train_step()
    assert not torch.equal(carried, t.carried)


@pytest.mark.parametrize("task, kwargs", [("chars", dict(T=16, mode="tbptt", window=8)),
                                          ("copy", dict(cell="lstm", layers=2, cell_kwargs={"dropout": 0.5},
                                                        mode="stream", window=9)),
                                          ("copy", dict(aux="r:6", aux_window=10, aux_pretrain=2))])
def test_resume_is_bit_identical(tmp_path, task, kwargs):
    """Six steps at once, and three then three after a restart from the checkpoint: the same
    parameters, optimiser moments and losses, bit for bit (the LM's carried state and the
    dropout masks' random state are in the checkpoint)."""
    cfg = dict(task=task, hidden=12, steps=6, batch=5, eval_every=2, log_every=1, save_every=3) | kwargs
    whole = Trainer(Config(**cfg), tmp_path / "whole", progress=False)
    whole.run()
    part = Trainer(Config(**(cfg | {"steps": 3})), tmp_path / "part", progress=False)
    part.run()
    rest = Trainer.resume(tmp_path / "part", steps=6, progress=False)
    assert rest.step == 3
    rest.run()
    for (k, a), b in zip(whole.net.state_dict().items(), rest.net.state_dict().values()):
        assert torch.equal(a, b), k
    for a, b in zip(whole.opt.state_dict()["state"].values(), rest.opt.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in a)
    losses = [[r["loss"] for r in t.history if r["split"] == "train"] for t in (whole, rest)]
    assert losses[0] == losses[1]
    rows = [json.loads(line) for line in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["config"]["steps"] == 3 and [r["step"] for r in rows[1:] if r["split"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert (tmp_path / "part" / "curve.png").stat().st_size > 1000


@pytest.mark.parametrize("kind", ["r", "p"])
def test_auxiliary_gradient_stays_in_its_window(kind):
    """The auxiliary loss reaches the main network only through the ``window`` steps before the
    anchor: the input gradient is zero before them and after the anchor, and not inside."""
    t = trainer(task="adding", T=40, aux=f"{kind}:5", aux_window=8)
    batch = t.task.batch("train", 0, 5)
    batch.x.requires_grad_(True)
    anchor = t.aux.anchor(40, 0, 0)
    assert anchor == t.aux.anchor(40, 0, 0) and (5 <= anchor <= 40 if kind == "r" else 1 <= anchor <= 35)
    loss = auxiliary.backward(t.aux, t.net, t.net.aux, batch, anchor)
    g = batch.x.grad.abs().sum(dim=(1, 2))
    start = max(0, anchor - 8)
    assert loss > 0 and (g[:start] == 0).all() and (g[anchor:] == 0).all() and (g[start:anchor] > 0).any()
    assert all(p.grad is not None for p in t.net.aux.parameters()) and t.net.head.weight.grad is None


def test_auxiliary_pretraining_then_joint():
    """Two steps on the auxiliary loss alone (the read-out head untouched, no supervised loss
    logged), then both; each row reports the auxiliary loss and its time."""
    t = trainer(aux="p:5", aux_pretrain=2, steps=3)
    head = t.net.head.weight.clone()
    t.run()
    train = [r for r in t.history if r["split"] == "train"]
    assert [r["loss"] is None for r in train] == [True, True, False]
    assert all(r["aux_loss"] > 0 and r["aux_seconds"] > 0 for r in train)
    assert not torch.equal(head, t.net.head.weight)
    t2 = trainer(aux="p:5", aux_pretrain=2, steps=2)
    t2.run()
    assert torch.equal(head, t2.net.head.weight)


def test_curriculum_lengthens_and_stretches_the_gates():
    """Sequences of 64 steps, then 128 from step 3: the g-LSTM's gates are stretched to each
    length (built for the last, halved for the first phase, doubled back at step 3); the rows
    report the length and the fraction of neuron updates performed."""
    t = trainer(task="digits", T=None, cell="glstm", curriculum="0:64,3:128", steps=5, batch=4, eval_every=10)
    assert t.cfg.T == 128 and [t.cfg.T_at(s) for s in range(5)] == [64, 64, 64, 128, 128]
    factors = []
    rescale = t.net.rnn.rescale_time
    t.net.rnn.rescale_time = lambda f: factors.append(f) or rescale(f)
    t.run()
    assert factors == [0.5, 2.0] and t.scaled_T == 128
    rows = [r for r in t.history if r["split"] == "train"]
    assert [r["T"] for r in rows] == [64, 64, 64, 128, 128]
    assert all(0 < r["open_fraction"] <= 1 for r in rows)


def test_budget_adds_its_gradient():
    """λ · budget adds λ · ∇(mean gate openness) to μ and σ and nothing elsewhere."""
    grads_of = {}
    for lam in (0.0, 0.5):
        t = trainer(task="adding", T=20, cell="glstm", budget=lam, steps=1)
        t.net.double()
        batch = t.task.batch("train", 0, 5)
        batch.x, batch.y = batch.x.double(), batch.y.double()
        t.backward(batch)
        if lam:
            (lam * t.net.rnn.budget(20)).backward()
        grads_of[lam] = grads(t.net)
    t = trainer(task="adding", T=20, cell="glstm", steps=1)
    t.net.double()
    t.net.rnn.budget(20).backward()
    for k, g in grads_of[0.5].items():
        extra = 0.5 * t.net.get_parameter(k).grad if t.net.get_parameter(k).grad is not None else 0
        assert torch.allclose(g, grads_of[0.0][k] + extra, rtol=0, atol=1e-12), k
    assert any(("mu" in k or "sigma" in k) and not torch.equal(g, grads_of[0.0][k]) for k, g in grads_of[0.5].items())


def test_evaluate_a_finite_split():
    t = trainer(task="digits", T=64, batch=64)
    result = t.evaluate("valid")
    assert set(result) == {"loss", "accuracy"} and 0 <= result["accuracy"] <= 1
    assert result["loss"] == pytest.approx(t.evaluate("valid", batches=t.task.batches("valid", 64))["loss"])


@pytest.mark.parametrize("kwargs, message", [
    (dict(mode="bptt"), "mode must be one of full, stream, tbptt"),
    (dict(mode="tbptt"), "needs a window"),
    (dict(cell="nosuch"), "cell must be one of"),
    (dict(lr=-1.0), "lr must be a positive finite number"),
    (dict(hidden=0), "hidden must be a positive int"),
    (dict(clip=0), "clip must be a positive number or None"),
    (dict(aux="x:3"), "aux must be r:LENGTH or p:LENGTH"),
    (dict(aux="r:30", T=30), "must be shorter than the sequence"),
    (dict(aux="r:3", aux_window=0), "aux window must be a positive int"),
    (dict(curriculum="0:64,3:128"), "need a module with time gates"),
    (dict(cell="glstm", curriculum="1:64,3:128"), "curriculum must be STEP:T pairs from step 0"),
    (dict(cell="glstm", curriculum="0:64,3:32"), "curriculum must be STEP:T pairs"),
    (dict(cell="glstm", curriculum="0:64,3:128", T=100), "is not the curriculum's last length"),
    (dict(budget=-1.0), "budget must be a non-negative number"),
])
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Trainer(Config(**kwargs), progress=False)


def test_reversible_gru_learns_copy():
    """A RevGRU learns to recall ten symbols over a 10-step delay well below the memoryless
    cross-entropy (ln 8) in a few hundred steps (seconds on a CPU); without memory it could not."""
    torch.set_num_threads(1)
    t = Trainer(Config(task="copy", T=30, cell="revgru", hidden=128, steps=600, batch=32, lr=5e-3,
                       eval_every=600, log_every=100), progress=False)
    t.run()
    assert t.history[-1]["loss"] < 0.6 * make("copy").baseline, t.history
