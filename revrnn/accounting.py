"""Activation-memory accounting: bytes of tensors saved for backward, live and at their peak.

CPU has no allocator peak counter, so revrnn accounts activations as the storages that
autograd saves (the pack hook of ``saved_tensors_hooks``), each storage counted once,
excluding the storages of parameters, buffers and inputs (see ``specs/memory.md`` §7.3 and
§8). A saved storage stays counted while autograd holds it, so the count also sees what a
backward frees and what a recompute saves again. This is accounting, not allocator truth:
it misses temporaries and gradients of activations; on CUDA, allocator peaks are reported
beside it (:mod:`revrnn.profile`).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


class _Saved:
    """What autograd holds instead of a saved tensor; releases its storage's count when dropped."""

    __slots__ = ("tensor", "counter", "ptr")

    def __init__(self, tensor: Tensor, counter: "SavedTensorCounter", ptr: int) -> None:
        self.tensor, self.counter, self.ptr = tensor, counter, ptr

    def __del__(self) -> None:
        self.counter._release(self.ptr)


class SavedTensorCounter:
    """Context manager that counts the storages autograd saves for backward inside it.

    Args:
        exclude: tensors whose storages are not activations (parameters, inputs, ...).

    :attr:`bytes` is the size of the distinct saved storages autograd holds now, and
    :attr:`peak_bytes` the largest that has been since the block began. A storage saved by
    several nodes, or through several views, counts once. Saving happens on entering and
    leaving autograd's graph, so run the backward inside the block too for the peak to cover it.
    """

    def __init__(self, exclude: Iterable[Tensor] = ()) -> None:
        self._excluded = {t.untyped_storage().data_ptr() for t in exclude}
        self._refs: dict[int, int] = {}  # storage address -> live saved references
        self._sizes: dict[int, int] = {}
        self.bytes = 0
        self.peak_bytes = 0
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)

    def _pack(self, t: Tensor):
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr in self._excluded:
            return t
        if self._refs.get(ptr, 0) == 0:
            self._sizes[ptr] = storage.nbytes()
            self.bytes += self._sizes[ptr]
            self.peak_bytes = max(self.peak_bytes, self.bytes)
        self._refs[ptr] = self._refs.get(ptr, 0) + 1
        # detached: a saved output holding its own grad_fn would make a cycle that outlives the graph
        return _Saved(t.detach(), self, ptr)

    @staticmethod
    def _unpack(packed) -> Tensor:
        return packed.tensor if isinstance(packed, _Saved) else packed

    def _release(self, ptr: int) -> None:
        self._refs[ptr] -= 1
        if self._refs[ptr] == 0:
            del self._refs[ptr]
            self.bytes -= self._sizes.pop(ptr)

    def __enter__(self) -> "SavedTensorCounter":
        self._hooks.__enter__()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc) -> None:
        _ACTIVE.remove(self)
        self._hooks.__exit__(*exc)


# Counters inside which a forward or backward is running. Not thread-local: autograd may run
# a backward on another thread, and revrnn's own buffers must be counted there too.
_ACTIVE: list[SavedTensorCounter] = []


def hold(tensors: Iterable[Tensor]) -> tuple:
    """Handles that count ``tensors`` as activations, in the innermost active counter, for as
    long as the handles live. For what revrnn keeps for backward outside autograd's saved
    tensors (states kept by the binomial schedule, residuals rebuilt in backward). Without an
    active counter the handles are the tensors themselves."""
    if not _ACTIVE:
        return tuple(tensors)
    counter = _ACTIVE[-1]
    return tuple(counter._pack(t) for t in tensors)


def unhold(handles: tuple) -> tuple[Tensor, ...]:
    """The tensors behind :func:`hold`'s handles."""
    return tuple(SavedTensorCounter._unpack(h) for h in handles)


def activation_bytes(module: torch.nn.Module, x: Tensor, *args) -> int:
    """Bytes saved for backward by one forward of ``module(x, *args)``, parameters,
    buffers and inputs excluded."""
    exclude = [*module.parameters(), *module.buffers(), x, *(a for a in args if isinstance(a, Tensor))]
    with SavedTensorCounter(exclude) as counter:
        result = module(x, *args)
        saved = counter.bytes
    del result
    return saved
