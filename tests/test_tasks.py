"""The tasks: shapes, determinism by (seed, split, index), and that each needs memory."""
from __future__ import annotations

import pytest
import torch

from revrnn import tasks
from revrnn.tasks import IGNORE

B = 8


def task_of(name: str) -> tasks.Task:
    return tasks.make(name, T=128 if "digits" in name else 40)


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_shapes_and_targets(name):
    task = task_of(name)
    b = task.batch("train", 0, B)
    T = task.T
    assert b.x.shape == ((T, B) if task.tokens else (T, B, task.features))
    assert b.y.shape == b.scored.shape == (T, B) and b.scored.dtype == torch.bool and b.scored.any()
    if task.tokens:
        assert b.x.dtype == torch.int64 and 0 <= int(b.x.min()) and int(b.x.max()) < task.tokens
    if task.classes:
        assert torch.equal(b.y == IGNORE, ~b.scored)
        assert 0 <= int(b.y[b.scored].min()) and int(b.y[b.scored].max()) < task.classes
    out = torch.randn(T, B, task.outputs)
    assert task.loss(out, b.y, b.scored).shape == ()
    assert task.baseline > 0


@pytest.mark.parametrize("name", list(tasks.TASKS))
def test_deterministic_by_seed_split_and_index(name):
    task = task_of(name)
    a, again = task.batch("train", 3, B), task.batch("train", 3, B)
    assert torch.equal(a.x, again.x) and torch.equal(a.y, again.y)
    others = [task.batch("train", 4, B), task.batch("valid", 3 % (task.batches("valid", B) or 4), B)]
    if task.name != "chars" and "digits" not in task.name:  # a finite data set's split is the seed's too
        others.append(tasks.make(task.name, T=task.T, seed=1).batch("train", 3, B))
    for other in others:
        assert not torch.equal(a.x, other.x)


def test_copy_recalls_what_it_cannot_see():
    """The scored steps see only blanks; their targets are the first ten inputs."""
    b = tasks.make("copy", T=50).batch("train", 0, B)
    assert torch.equal(b.y[-10:], b.x[:10]) and (b.x[:10] >= 1).all() and (b.x[:10] <= 8).all()
    assert (b.x[-10:] == 0).all() and (b.x[10:-11] == 0).all() and (b.x[-11] == 9).all()


def test_denoise_recalls_scattered_symbols_in_order():
    b = tasks.make("denoise", T=50).batch("train", 0, B)
    assert (b.x[-10:] == 0).all() and (b.x[-11] == 9).all()
    for row in range(B):
        kept = b.x[:-11, row][b.x[:-11, row] > 0]
        assert torch.equal(kept, b.y[-10:, row])
    first = b.x[:-11] > 0
    assert not torch.equal(first[:, 0], first[:, 1])  # the places differ per row


def test_adding_target_is_the_marked_sum():
    b = tasks.make("adding", T=30).batch("train", 0, B)
    assert torch.allclose(b.y[-1], (b.x[..., 0] * b.x[..., 1]).sum(0))
    assert b.scored[-1].all() and not b.scored[:-1].any()


def test_digits_need_the_whole_image():
    """Split fixed and disjoint; the label is read at the last step, which the last pixels alone
    cannot give (images whose last three pixels agree have many labels); permuted reorders the pixels."""
    task = tasks.make("digits")
    seen = {}
    for split in ("train", "valid", "test"):
        n = task.batches(split, 100) or 14
        rows = torch.cat([task.batch(split, i, 100).x[:, :, 0].T for i in range(n)])
        seen[split] = {tuple(r.tolist()) for r in rows}
    assert len(seen["valid"]) > 150 and not seen["valid"] & seen["test"] and not seen["train"] & seen["test"]
    assert torch.equal(tasks.make("digits", seed=5).batch("valid", 0, B).x, task.batch("valid", 0, B).x)
    b = task.batch("valid", 0, 200)
    tails = {}
    for tail, label in zip(b.x[-3:, :, 0].T.tolist(), b.y[-1].tolist()):
        tails.setdefault(tuple(tail), set()).add(label)
    assert max(len(labels) for labels in tails.values()) >= 5
    p = tasks.make("pdigits").batch("valid", 0, B)
    assert torch.equal(p.y, b.y[:, :B]) and not torch.equal(p.x, b.x[:, :B])
    assert torch.equal(p.x.sort(0).values, b.x[:, :B].sort(0).values)
    long = tasks.make("digits", T=128).batch("valid", 0, B)
    assert torch.equal(long.x[::2], b.x[:, :B]) and torch.equal(long.x[1::2], b.x[:, :B])


def test_chars_continue_from_batch_to_batch():
    task = tasks.make("chars", T=32)
    a, b = task.batch("train", 0, B), task.batch("train", 1, B)
    assert torch.equal(a.y[:-1], a.x[1:]) and torch.equal(b.x[0], a.y[-1])
    assert torch.equal(task.batch("train", task.batches("train", B), B).x, a.x)  # wraps around
    assert 3 < task.baseline / torch.log(torch.tensor(2.0)).item() < 6  # bits per byte of the unigram
    d = task.describe()
    assert d["bytes"] > 10 ** 6 and len(d["sha256"]) == 16


def test_reverse():
    b = tasks.make("reverse", T=7).batch("train", 0, B)
    assert torch.equal(b.y, b.x.flip(0))


@pytest.mark.parametrize("call, message", [
    (lambda: tasks.make("nosuch"), "task must be one of"),
    (lambda: tasks.make("copy", T=20), "T must be an int >= 21"),
    (lambda: tasks.make("digits", T=100), "T must be a multiple of 64"),
    (lambda: tasks.make("copy").batch("train", -1, B), "index must be a non-negative int"),
    (lambda: tasks.make("copy").batch("dev", 0, B), "split must be one of"),
    (lambda: tasks.make("adding").batch("train", 0, 0), "size must be an int >= 1"),
    (lambda: tasks.make("chars", T=10 ** 6).batch("valid", 0, B), "too short"),
])
def test_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
