"""Auxiliary losses (Trinh, Dai, Luong & Le 2018, "Learning longer-term dependencies in RNNs with
auxiliary losses"): at an anchor step, a small decoder started from the main network's state
either reconstructs the segment before the anchor (``r``, r-LSS) or predicts the segment after
it (``p``, p-LSS), teacher-forced. Its gradient enters the main network only through the anchor
state and only ``window`` steps back from it, so its memory is bounded like truncated
backpropagation's while it asks the state to hold what lies far back.

One anchor per batch (the same step for every row), drawn from the batch's own random stream, so
it is the same on a resumed run. Inputs are the targets: token ids with cross-entropy, features
with squared error. The decoder is a 2-layer LSTM whose initial states are a linear map of the
main network's top output at the anchor.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .tasks import Batch, Task, generator

KINDS = ("r", "p")


@dataclass(frozen=True)
class Auxiliary:
    """``kind`` r or p, the segment ``length``, the main network's ``window`` the gradient enters
    (None: the whole prefix), the loss ``weight``, and ``pretrain``: steps trained on the
    auxiliary loss alone before the joint phase."""

    kind: str
    length: int
    window: int | None = None
    weight: float = 1.0
    pretrain: int = 0

    @classmethod
    def parse(cls, text: str, **kwargs) -> Auxiliary:
        """``"r:600"`` or ``"p:100"``."""
        kind, _, length = text.partition(":")
        if kind not in KINDS or not length.isdigit() or int(length) < 1:
            raise ValueError(f"aux must be r:LENGTH or p:LENGTH (a positive int), got {text!r}")
        return cls(kind, int(length), **kwargs)

    def __post_init__(self) -> None:
        if self.window is not None and (not isinstance(self.window, int) or self.window < 1):
            raise ValueError(f"aux window must be a positive int or None, got {self.window!r}")
        if not isinstance(self.pretrain, int) or self.pretrain < 0:
            raise ValueError(f"aux pretrain must be a non-negative int, got {self.pretrain!r}")
        if not self.weight > 0:
            raise ValueError(f"aux weight must be positive, got {self.weight!r}")

    def check(self, T: int) -> None:
        if self.length >= T:
            raise ValueError(f"the auxiliary segment ({self.length} steps) must be shorter than the sequence (T={T})")

    def anchor(self, T: int, seed: int, step: int) -> int:
        """The anchor step a: r-LSS reconstructs x[a-l:a], p-LSS predicts x[a:a+l]."""
        g = generator(seed, "train", step)
        g.manual_seed(g.initial_seed() ^ 0x5A5A5A5A)  # not the data's draws
        low, high = (self.length, T) if self.kind == "r" else (1, T - self.length)
        return int(torch.randint(low, high + 1, (1,), generator=g))


class Decoder(nn.Module):
    """The auxiliary decoder: from the main network's output at the anchor (B, width), predict
    each step of a segment from the steps before it."""

    def __init__(self, task: Task, width: int, hidden: int, layers: int = 2) -> None:
        super().__init__()
        self.task, self.layers, self.hidden = task, layers, hidden
        self.embed = nn.Embedding(task.tokens, hidden) if task.tokens else None
        self.start = nn.Linear(width, 2 * layers * hidden)
        self.lstm = nn.LSTM(hidden if task.tokens else task.features, hidden, num_layers=layers)
        self.out = nn.Linear(hidden, task.tokens or task.features)

    def loss(self, anchor_out: Tensor, segment: Tensor) -> tuple[Tensor, int]:
        """Summed loss of predicting ``segment`` (l, B) tokens or (l, B, features), teacher-forced:
        step j reads step j-1 (a zero input before the first); and the number of predictions."""
        h, c = torch.tanh(self.start(anchor_out)).view(-1, 2 * self.layers, self.hidden).transpose(0, 1).chunk(2)
        x = self.embed(segment) if self.embed is not None else segment
        x = torch.cat([torch.zeros_like(x[:1]), x[:-1]])
        out, _ = self.lstm(x, (h.contiguous(), c.contiguous()))
        pred = self.out(out)
        if self.task.tokens:
            loss = nn.functional.cross_entropy(pred.flatten(0, 1), segment.flatten(), reduction="sum")
            return loss, segment.numel()
        return ((pred - segment) ** 2).sum(), segment.numel()


def backward(aux: Auxiliary, net: nn.Module, decoder: Decoder, batch: Batch, anchor: int, state=None) -> float:
    """The auxiliary loss's gradient (mean per prediction, times ``weight``) into the main network
    (the ``window`` steps before the anchor) and the decoder; returns the loss. ``state`` is the
    main network's initial state (a carried one), or None."""
    x = batch.x
    start = 0 if aux.window is None else max(0, anchor - aux.window)
    if start:
        with torch.no_grad():
            _, state = net(x[:start], state)
    out, _ = net(x[start:anchor], state, t0=start)
    segment = x[anchor - aux.length:anchor] if aux.kind == "r" else x[anchor:anchor + aux.length]
    loss, count = decoder.loss(out[-1], segment.detach())
    loss = aux.weight * loss / count
    loss.backward()
    return float(loss.detach())
