"""A generated translation-like task for sequence to sequence models."""
from __future__ import annotations

import torch

from .base import Batch, Task, generator, positive, uniform_baseline


class Reverse(Task):
    """A string of ``T`` digits in, the same digits reversed out: the first output needs the last
    input and the last output the first, so an encoder must keep the whole string (or a decoder
    attend to it). ``x`` (T, B) source tokens, ``y`` (T, B) target tokens, every step scored."""

    name = "reverse"
    summary = "a digit string and its reversal (sequence to sequence: an encoder, attention, a decoder)"
    tokens = classes = 10
    #: the inputs and targets are two sequences (an encoder's and a decoder's), not one
    seq2seq = True

    def __init__(self, T: int = 20, seed: int = 0) -> None:
        self.T, self.seed = positive("T", T, 1), seed

    @property
    def baseline(self) -> float:
        return uniform_baseline(10)

    def batch(self, split: str, index: int, size: int) -> Batch:
        x = torch.randint(0, 10, (self.T, positive("size", size)), generator=generator(self.seed, split, index))
        return Batch(x, x.flip(0), torch.ones(self.T, size, dtype=torch.bool))
