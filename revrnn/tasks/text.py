"""Character-level language modelling on text every Python installation has: the standard
library's own top-level modules (``*.py`` beside ``os.py``), read as bytes in file-name order;
the first 90 % trains, the next 5 % validates, the last 5 % tests. The corpus follows the Python
version, so :meth:`Chars.describe` records the version and a digest of the text."""
from __future__ import annotations

import functools
import hashlib
import math
import os
import platform
from pathlib import Path

import torch

from .base import Batch, Task, positive


@functools.cache
def corpus() -> bytes:
    root = Path(os.__file__).parent
    return b"".join(p.read_bytes() for p in sorted(root.glob("*.py")))


@functools.cache
def _split(split: str) -> torch.Tensor:
    data = corpus()
    a, b = int(len(data) * 0.9), int(len(data) * 0.95)
    part = {"train": data[:a], "valid": data[a:b], "test": data[b:]}[split]
    return torch.frombuffer(bytearray(part), dtype=torch.uint8).to(torch.int64)


class Chars(Task):
    """Predict every next byte. The split is cut into ``size`` parallel streams and batch ``i``
    is the ``i``-th window of ``T`` steps of each (wrapping around after the last): consecutive
    batches continue the same streams, so the state carries from one to the next (truncated
    backpropagation between windows). The loss is in nats per byte; the metric, bits per
    character."""

    name, metric, carries = "chars", "bits/char", True
    summary = "character-level language modelling on the Python standard library's sources"
    tokens = classes = 256

    def __init__(self, T: int = 128, seed: int = 0) -> None:
        self.T, self.seed = positive("T", T, 1), seed

    @functools.cached_property
    def baseline(self) -> float:
        """Cross-entropy of the training split's byte frequencies (a memoryless model)."""
        counts = torch.bincount(self._text("train"), minlength=256).double()
        p = counts[counts > 0] / counts.sum()
        return float(-(p * p.log()).sum())

    def _text(self, split: str) -> torch.Tensor:
        return _split(split)

    def _streams(self, split: str, size: int) -> torch.Tensor:
        text = self._text(split)
        per = len(text) // positive("size", size)
        if per < self.T + 1:
            raise ValueError(f"the {split} split ({len(text)} bytes) is too short for {size} streams of T={self.T}")
        return text[:per * size].view(size, per)

    def batches(self, split: str, size: int) -> int:
        """Windows per pass over the split (an epoch)."""
        return (len(self._text(split)) // positive("size", size) - 1) // self.T

    def batch(self, split: str, index: int, size: int) -> Batch:
        streams = self._streams(split, size)
        s = index % self.batches(split, size) * self.T
        window = streams[:, s:s + self.T + 1].T
        return Batch(window[:-1].contiguous(), window[1:].contiguous(), torch.ones(self.T, size, dtype=torch.bool))

    def metric_of(self, loss_sum: float, score_sum: float, count: int) -> float:
        return loss_sum / max(count, 1) / math.log(2)

    def describe(self) -> dict:
        return super().describe() | {"python": platform.python_version(), "bytes": len(corpus()),
                                     "sha256": hashlib.sha256(corpus()).hexdigest()[:16]}
