"""CUDA graphs for a backend's chunks, off unless asked for: ``backend.graphs = True`` on the
``cuda`` and ``triton`` backends (``get_backend(name, device)``). The first chunk of a shape is
captured, every kernel launch and GEMM of its steps, into a ``torch.cuda.CUDAGraph``; later chunks
of that shape copy their tensors into the graph's inputs and replay it — one launch per chunk
instead of several per step, for small batches where launching costs more than computing.

A graph is keyed by the call (forward with or without residuals, backward), the cell, and every
tensor's shape, dtype and device — and by the chunk's first step for cells that read time (the
g-LSTM). Parameters are inputs too, so an optimiser's update or a new module reaches the graph.
Its outputs are copied out after each replay (the next replay overwrites them), so a graph costs
one chunk's buffers, and a chunk its inputs' and outputs' copies. A chunk that cannot be
captured (a host synchronisation, e.g. the g-LSTM's sparse path, which reads its open-unit
counts) runs eagerly from then on; ``Graphs.refused`` says why. The reversible cells, whose chunks
run in their own autograd Function, are not graphed.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._pytree import tree_flatten, tree_map, tree_unflatten


class CudaCapture:
    """Captures ``fn()`` into a CUDA graph on a stream of its own, after one untimed run there
    (which compiles kernels and allocates workspaces outside the capture); ``replay()``."""

    def __init__(self, fn: Callable[[], Any], device: torch.device) -> None:
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            fn()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream):
            self.out = fn()
        torch.cuda.current_stream(device).wait_stream(stream)

    def replay(self) -> Any:
        self.graph.replay()
        return self.out


class Graphs:
    """One backend's graphs, keyed by call and shape (see the module docstring). ``capture`` is
    what makes and replays one (:class:`CudaCapture`), for tensors on ``devices`` (the tests put
    a CPU stand-in here)."""

    def __init__(self, capture: Callable[[Callable[[], Any], torch.device], Any] = CudaCapture,
                 devices: tuple[str, ...] = ("cuda",)) -> None:
        self.capture, self.devices = capture, devices
        self.graphs: dict[tuple, tuple[Any, list[Tensor]]] = {}
        #: keys that could not be captured, and why
        self.refused: dict[tuple, str] = {}

    def run(self, name: str, cell, fn: Callable[..., Any], chunk, *args: Any) -> Any:
        """``fn(chunk, *args)``, through the graph of its key."""
        leaves, spec = tree_flatten(((chunk.xp, chunk.mask), args))
        key = (name, id(cell), chunk.t0 if cell.reads_time else None, str(spec),
               tuple((tuple(x.shape), x.dtype, x.device, x.requires_grad) if isinstance(x, Tensor) else x
                     for x in leaves))
        if key in self.refused:
            return fn(chunk, *args)
        entry = self.graphs.get(key)
        if entry is None:
            # runners read requires_grad (which weight gradients to compute): the copies keep it
            static = [x.detach().clone().requires_grad_(x.requires_grad) if isinstance(x, Tensor) else x
                      for x in leaves]

            def call():
                (xp, mask), rest = tree_unflatten(static, spec)
                return fn(type(chunk)(chunk.t0, xp, mask), *rest)
            try:
                entry = self.graphs[key] = (self.capture(call, chunk.xp.device), static)
            except RuntimeError as err:  # e.g. a host synchronisation inside the capture
                self.refused[key] = str(err)
                return fn(chunk, *args)
        graph, static = entry
        for s, x in zip(static, leaves):
            if isinstance(s, Tensor):
                s.copy_(x)
        return tree_map(lambda t: t.clone() if isinstance(t, Tensor) else t, graph.replay())
