"""Generated long-range tasks: a fresh batch for every index, drawn from (seed, split, index)."""
from __future__ import annotations

import torch
from torch import Tensor

from .base import IGNORE, Batch, Task, generator, positive, uniform_baseline

#: symbols to remember (1 .. SYMBOLS), how many, and the blank/noise (0) and marker tokens
SYMBOLS, RECALL = 8, 10
MARKER = SYMBOLS + 1


def adding_problem(T: int, batch: int, generator: torch.Generator | None = None,
                   dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """The adding problem (Hochreiter & Schmidhuber 1997): inputs (T, B, 2), targets (B, 1).

    Channel 0 holds random values in [0, 1); channel 1 marks one step in the first half and
    one in the second half. The target is the sum of the two marked values, so the model must
    carry information across up to T steps. Predicting the mean (1.0) gives MSE 1/6.
    """
    if not isinstance(T, int) or T < 2:
        raise ValueError(f"T must be an int >= 2, got {T!r}")
    if not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive int, got {batch!r}")
    values = torch.rand(T, batch, generator=generator, dtype=dtype)
    half = T // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, T, (batch,), generator=generator)
    marks = torch.zeros(T, batch, dtype=dtype)
    rows = torch.arange(batch)
    marks[first, rows] = 1
    marks[second, rows] = 1
    target = (values * marks).sum(0, keepdim=True).T
    return torch.stack([values, marks], dim=2), target


#: MSE of always predicting the mean, the score to beat.
ADDING_BASELINE_MSE = 1 / 6


class _Recall(Task):
    """A recall task: ``RECALL`` symbols of 1..8 placed in a sequence of ``T`` tokens (0 blank or
    noise), a marker at step T - 11, and the symbols to come out, in order, in the last
    ``RECALL`` steps. Scored there only: without memory the best is uniform guessing, ln 8."""

    tokens, classes = MARKER + 1, SYMBOLS + 1

    def __init__(self, T: int = 120, seed: int = 0) -> None:
        self.T, self.seed = positive("T", T, 2 * RECALL + 1), seed

    @property
    def baseline(self) -> float:
        return uniform_baseline(SYMBOLS)

    def place(self, x: Tensor, data: Tensor, g: torch.Generator) -> None:
        """Write ``data`` (RECALL, B) into the blank input ``x`` (T, B)."""
        raise NotImplementedError

    def batch(self, split: str, index: int, size: int) -> Batch:
        g = generator(self.seed, split, index)
        data = torch.randint(1, SYMBOLS + 1, (RECALL, positive("size", size)), generator=g)
        x = torch.zeros(self.T, size, dtype=torch.int64)
        self.place(x, data, g)
        x[-RECALL - 1] = MARKER
        y = torch.full_like(x, IGNORE)
        y[-RECALL:] = data
        scored = torch.zeros_like(x, dtype=torch.bool)
        scored[-RECALL:] = True
        return Batch(x, y, scored)


class Copy(_Recall):
    """Copy memory (Arjovsky, Shah & Bengio 2016): the symbols first, a blank delay, the marker,
    then the recall. ``T`` is the whole length (the delay is T - 20)."""

    name = "copy"
    summary = "copy memory (Arjovsky et al. 2016): recall 10 symbols after a blank delay"

    def place(self, x: Tensor, data: Tensor, g: torch.Generator) -> None:
        x[:RECALL] = data


class Denoise(_Recall):
    """Denoise (Jing et al. 2019, the gated orthogonal recurrent unit): the symbols at random
    steps among noise before the marker. Where they are differs per row, so the model must both
    find and keep them."""

    name = "denoise"
    summary = "denoise (Jing et al. 2019): recall 10 symbols scattered among noise, in order"

    def place(self, x: Tensor, data: Tensor, g: torch.Generator) -> None:
        span = self.T - RECALL - 1
        where = torch.rand(x.shape[1], span, generator=g).argsort(dim=1)[:, :RECALL].sort(dim=1).values.T
        x.scatter_(0, where, data)


class Adding(Task):
    """The adding problem (:func:`adding_problem`), scored on the last step by squared error."""

    name, metric = "adding", "mse"
    summary = "the adding problem (Hochreiter & Schmidhuber 1997): sum the two marked values"
    features = 2

    def __init__(self, T: int = 100, seed: int = 0) -> None:
        self.T, self.seed = positive("T", T, 2), seed

    @property
    def baseline(self) -> float:
        return ADDING_BASELINE_MSE

    def batch(self, split: str, index: int, size: int) -> Batch:
        x, target = adding_problem(self.T, positive("size", size), generator(self.seed, split, index))
        y = torch.zeros(self.T, size)
        y[-1] = target[:, 0]
        scored = torch.zeros(self.T, size, dtype=torch.bool)
        scored[-1] = True
        return Batch(x, y, scored)
