"""Synthetic long-range tasks, generated on the fly."""
from __future__ import annotations

import torch
from torch import Tensor


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
