"""``track()``: activation accounting and CUDA peak memory around a user's own code."""
from __future__ import annotations

import gc
from typing import Any, Iterable

import torch
from torch import Tensor, nn

from ..accounting import SavedTensorCounter

MiB = 2 ** 20


def _tensors(exclude: Iterable[Any]) -> list[Tensor]:
    out: list[Tensor] = []
    for item in exclude:
        if isinstance(item, nn.Module):
            out += [*item.parameters(), *item.buffers()]
        elif isinstance(item, Tensor):
            out.append(item)
        else:
            raise TypeError(f"exclude takes tensors and modules, got {type(item).__name__}")
    return out


class Tracker:
    """What :func:`track` measured. All sizes are bytes.

    * ``saved_bytes`` — distinct storages autograd (and revrnn) holds for backward right now;
    * ``saved_peak_bytes`` — the most it held at once inside the block (accounting, any device);
    * ``peak_delta_bytes`` / ``peak_reserved_bytes`` — on CUDA, the allocator's peak allocated
      bytes above the allocation when the block began, and its peak reserved bytes; ``None`` on CPU.
    """

    def __init__(self, device: torch.device, exclude: Iterable[Any]) -> None:
        self.device = device
        self._counter = SavedTensorCounter(_tensors(exclude))
        self.baseline_bytes: int | None = None
        self.peak_delta_bytes: int | None = None
        self.peak_reserved_bytes: int | None = None

    @property
    def saved_bytes(self) -> int:
        return self._counter.bytes

    @property
    def saved_peak_bytes(self) -> int:
        return self._counter.peak_bytes

    def __enter__(self) -> "Tracker":
        if self.device.type == "cuda":
            gc.collect()
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
        self._counter.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._counter.__exit__(*exc)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_delta_bytes = torch.cuda.max_memory_allocated(self.device) - self.baseline_bytes
            self.peak_reserved_bytes = torch.cuda.max_memory_reserved(self.device)

    def summary(self) -> str:
        lines = [f"saved for backward now   {self.saved_bytes / MiB:10.3f} MiB",
                 f"saved for backward, peak {self.saved_peak_bytes / MiB:10.3f} MiB "
                 "(pack-hook accounting; parameters and excluded tensors not counted)"]
        if self.peak_delta_bytes is not None:
            lines += [f"CUDA peak allocated - baseline {self.peak_delta_bytes / MiB:10.3f} MiB",
                      f"CUDA peak reserved            {self.peak_reserved_bytes / MiB:10.3f} MiB"]
        return "\n".join(lines)


def track(device: torch.device | str | None = None, exclude: Iterable[Any] = ()) -> Tracker:
    """Measure activation memory of the code inside ``with track(...) as m:``.

    Args:
        device: where the code runs; on CUDA the allocator's peak counters are reset on entry
            (default: the current CUDA device if CUDA is available, else CPU).
        exclude: modules (their parameters and buffers) and tensors (inputs, targets) whose
            storages are not activations.

    Run both forward and backward inside the block for ``saved_peak_bytes`` to cover the
    backward (recomputation saves again there). Example::

        with revrnn.profile.track(exclude=[model, x]) as m:
            loss = model(x)[0].square().mean()
            loss.backward()
        print(m.summary())
    """
    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return Tracker(device, exclude)
