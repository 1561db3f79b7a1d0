"""What every task has: a batch, the loss and metric of its outputs, and deterministic draws."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

#: the target of an unscored step (classification tasks)
IGNORE = -100
SPLITS = ("train", "valid", "test")


def generator(seed: int, split: str, index: int) -> torch.Generator:
    """The generator of batch ``index`` of ``split``: the same draws for the same three numbers on
    every machine, and unrelated draws for any other (NumPy's seed sequence mixes them)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    state = np.random.SeedSequence([seed, SPLITS.index(split), index]).generate_state(1, np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & (2 ** 63 - 1))


@dataclass
class Batch:
    """``x``: (T, B) int64 tokens, or (T, B, features) float; ``y``: the target of every step,
    (T, B) int64 classes with :data:`IGNORE` where unscored, or (T, B) float for a regression
    task, whose scored steps ``scored`` (T, B) bool says."""

    x: Tensor
    y: Tensor
    scored: Tensor

    def __len__(self) -> int:
        return self.x.shape[0]

    def slice(self, s: int, e: int) -> Batch:
        return Batch(self.x[s:e], self.y[s:e], self.scored[s:e])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.x.to(device), self.y.to(device), self.scored.to(device))


def positive(name: str, value, least: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < least:
        raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
    return value


class Task:
    """A task: ``batch(split, index, size)`` and how its outputs are scored.

    ``tokens``: the input vocabulary (inputs are token ids) or 0 (inputs are ``features``
    floats per step); ``classes``: the output classes, 0 for a regression (one output).
    ``baseline`` is the loss per scored step of the best predictor without memory (the score to
    beat); ``metric`` names what :meth:`score` reports beside the loss."""

    name: ClassVar[str]
    #: what the task is, in one line
    summary: ClassVar[str]
    metric: ClassVar[str] = "accuracy"
    #: consecutive batches continue the same sequences: carry the state (language modelling)
    carries: ClassVar[bool] = False
    tokens: int = 0
    features: int = 0
    classes: int = 0
    T: int
    seed: int

    @property
    def inputs(self) -> int:
        """The width of one step's input: the vocabulary of a token task, else the features."""
        return self.tokens or self.features

    @property
    def outputs(self) -> int:
        return self.classes or 1

    def batch(self, split: str, index: int, size: int) -> Batch:
        raise NotImplementedError

    def batches(self, split: str, size: int) -> int | None:
        """How many batches of ``size`` make one pass over ``split`` (a finite data set), or None
        (generated: every index is a new batch)."""
        return None

    @property
    def baseline(self) -> float:
        raise NotImplementedError

    def loss(self, out: Tensor, y: Tensor, scored: Tensor) -> Tensor:
        """The summed loss of outputs ``out`` (T, B, outputs) over the scored steps."""
        if self.classes:
            return torch.nn.functional.cross_entropy(_wide(out).reshape(-1, self.classes), y.reshape(-1),
                                                     ignore_index=IGNORE, reduction="sum")
        return ((_wide(out[..., 0]) - y) ** 2)[scored].sum()

    def score(self, out: Tensor, y: Tensor, scored: Tensor) -> float:
        """The summed metric over the scored steps: correct predictions (classes), or the squared
        error (regression); :meth:`metric_of` turns sums into the reported number."""
        if self.classes:
            return float(((out.argmax(-1) == y) & scored).sum())
        return float(((_wide(out[..., 0]) - y) ** 2)[scored].sum())

    def metric_of(self, loss_sum: float, score_sum: float, count: int) -> float:
        return score_sum / max(count, 1)

    def describe(self) -> dict:
        return {"task": self.name, "T": self.T, "seed": self.seed, "baseline": self.baseline,
                "metric": self.metric}


def _wide(out: Tensor) -> Tensor:
    """Half-precision outputs scored in float32; float32 and float64 as they are."""
    return out.to(torch.promote_types(out.dtype, torch.float32))


def uniform_baseline(k: int) -> float:
    """Cross-entropy per step of guessing uniformly among ``k`` equally likely classes."""
    return math.log(k)
