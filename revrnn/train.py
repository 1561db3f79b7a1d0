"""Training a recurrent model on a synthetic task, with optional truncated BPTT."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .tasks import adding_problem


class Regressor(nn.Module):
    """A recurrent stack followed by a linear read-out of the last output."""

    def __init__(self, rnn: nn.Module, out_features: int = 1) -> None:
        super().__init__()
        self.rnn = rnn
        width = rnn.hidden_size * (2 if rnn.bidirectional else 1)
        self.head = nn.Linear(getattr(rnn, "proj_size", 0) or width, out_features)

    def forward(self, x: Tensor, tbptt: int | None = None) -> Tensor:
        if tbptt is None:
            out, _ = self.rnn(x)
            return self.head(out[-1])
        # Truncated BPTT: gradients flow back at most `tbptt` steps; the state is carried
        # forward detached between windows (biased, cheaper in memory).
        state, out = None, None
        for s in range(0, x.shape[0], tbptt):
            if state is not None:
                state = tuple(h.detach() for h in state) if isinstance(state, tuple) else state.detach()
            out, state = self.rnn(x[s:s + tbptt], state)
        return self.head(out[-1])


@dataclass
class TrainResult:
    losses: list[float]
    seconds: float

    @property
    def final_loss(self) -> float:
        tail = self.losses[-max(1, len(self.losses) // 10):]
        return sum(tail) / len(tail)


def train_adding(model: Regressor, T: int, steps: int, batch: int = 64, lr: float = 1e-2,
                 tbptt: int | None = None, clip: float = 1.0, seed: int = 0,
                 callback: Callable[[int, float], None] | None = None) -> TrainResult:
    """Train ``model`` on fresh batches of the adding problem with Adam and gradient clipping."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    start = time.perf_counter()
    dtype = next(model.parameters()).dtype
    for step in range(steps):
        x, y = adding_problem(T, batch, g, dtype)
        loss = nn.functional.mse_loss(model(x, tbptt), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        losses.append(loss.item())
        if callback is not None:
            callback(step, losses[-1])
    return TrainResult(losses, time.perf_counter() - start)
