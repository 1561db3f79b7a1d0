"""Sequential and permuted pixel digits: scikit-learn's bundled 8×8 digits (1797 images), one
pixel per step, the class read at the last step. The split and the pixel order are fixed (they do
not depend on the task's seed, which orders the training batches)."""
from __future__ import annotations

import functools
import math

import torch

from .base import IGNORE, Batch, Task, generator, positive, uniform_baseline

#: images in the validation and test splits (the rest, 1397, train)
HELD_OUT = 200
#: the fixed seed of the split and of the permuted task's pixel order
FIXED = 20161220


@functools.cache
def _images() -> tuple[torch.Tensor, torch.Tensor]:
    """(1797, 64) pixels in [0, 1] and their labels, in a fixed shuffled order."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("the digits tasks read scikit-learn's bundled digits: pip install scikit-learn "
                          "(or revrnn[tasks])") from error
    d = load_digits()
    order = torch.randperm(len(d.target), generator=torch.Generator().manual_seed(FIXED))
    return torch.tensor(d.data, dtype=torch.float32)[order] / 16, torch.tensor(d.target, dtype=torch.int64)[order]


class Digits(Task):
    """Classify an 8×8 digit seen one pixel per step (T = 64), each pixel held for ``T / 64``
    steps when ``T`` is a longer multiple of 64. ``permuted``: the pixels in one fixed random order."""

    name = "digits"
    summary = "sequential 8x8 digits (scikit-learn's), one pixel per step, T a multiple of 64"
    features, classes = 1, 10

    def __init__(self, T: int = 64, seed: int = 0, permuted: bool = False) -> None:
        self.T, self.seed, self.permuted = positive("T", T, 64), seed, permuted
        if T % 64:
            raise ValueError(f"T must be a multiple of 64 (pixels held T/64 steps each), got {T}")
        self.order = torch.randperm(64, generator=torch.Generator().manual_seed(FIXED + 1)) if permuted else None

    @property
    def baseline(self) -> float:
        return uniform_baseline(10)

    def _split(self, split: str) -> slice:
        n = len(_images()[1])
        return {"train": slice(0, n - 2 * HELD_OUT), "valid": slice(n - 2 * HELD_OUT, n - HELD_OUT),
                "test": slice(n - HELD_OUT, n)}[split]

    def batches(self, split: str, size: int) -> int | None:
        if split == "train":
            return None
        part = self._split(split)
        return math.ceil((part.stop - part.start) / positive("size", size))

    def batch(self, split: str, index: int, size: int) -> Batch:
        pixels, labels = _images()
        part = self._split(split)
        n = part.stop - part.start
        positive("size", size)
        if split == "train":  # a fresh order every epoch, drawn from (seed, epoch)
            per_epoch = max(1, n // size)
            epoch, k = divmod(index, per_epoch)
            rows = torch.randperm(n, generator=generator(self.seed, split, epoch))[k * size:(k + 1) * size]
        else:  # in order, the last batch short
            if not 0 <= index * size < n:
                raise IndexError(f"{split} has {math.ceil(n / size)} batches of {size}, asked for batch {index}")
            rows = torch.arange(index * size, min(n, (index + 1) * size))
        x = pixels[part][rows]
        if self.order is not None:
            x = x[:, self.order]
        x = x.T.repeat_interleave(self.T // 64, dim=0)[..., None]  # (T, B, 1)
        y = torch.full((self.T, len(rows)), IGNORE, dtype=torch.int64)
        y[-1] = labels[part][rows]
        scored = torch.zeros(self.T, len(rows), dtype=torch.bool)
        scored[-1] = True
        return Batch(x, y, scored)

    def describe(self) -> dict:
        return super().describe() | {"permuted": self.permuted}


class PermutedDigits(Digits):
    """:class:`Digits` with the pixels in one fixed random order: every class depends on pixels
    spread over the whole sequence."""

    name = "pdigits"
    summary = "the digits with their pixels in one fixed random order"

    def __init__(self, T: int = 64, seed: int = 0) -> None:
        super().__init__(T, seed, permuted=True)
