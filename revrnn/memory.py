"""Activation-memory accounting: bytes of tensors saved for backward.

CPU has no allocator peak counter, so revrnn accounts activations as the storages that
autograd saves during a forward pass (the pack hook of ``saved_tensors_hooks``), each storage
counted once, excluding the storages of parameters, buffers and inputs (see
``specs/memory.md`` §7.3 and §8). This is accounting, not allocator truth; the same number
is meaningful on CUDA, where peak counters are reported beside it.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


class SavedTensorCounter:
    """Context manager that records every storage saved for backward inside it.

    Args:
        exclude: tensors whose storages are not activations (parameters, inputs, ...).

    After the block, :attr:`bytes` is the total size of distinct saved storages.
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._seen: dict[int, int] = {}
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)

    def _pack(self, t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in self._excluded:
            self._seen[ptr] = storage.nbytes()
        return t

    @property
    def bytes(self) -> int:
        return sum(self._seen.values())

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._hooks.__exit__(*exc)


def activation_bytes(module: torch.nn.Module, x: Tensor, *args) -> int:
    """Bytes saved for backward by one forward of ``module(x, *args)``, parameters,
    buffers and inputs excluded."""
    exclude = [*module.parameters(), *module.buffers(), x, *(a for a in args if isinstance(a, Tensor))]
    with SavedTensorCounter(exclude) as counter:
        module(x, *args)
    return counter.bytes
