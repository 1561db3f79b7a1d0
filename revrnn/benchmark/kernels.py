"""The ``kernels`` suite: one chunk of K steps of one layer, forward (keeping what backward needs)
and backward apart, through each backend's chunk calls (``Backend.forward_chunk`` and
``backward_chunk``: no engine, no input projection), per step, for every catalog case but the
reversible ones (whose loop is the whole stack's: the ``sequence`` suite times them):

* ``GEMMs alone`` — the baseline and the first floor: the chunk's recurrent GEMMs in torch (per
  step h W_hh^T forward; backward d rec W_hh per step and d W_hh over the chunk; the LSTM's
  projection likewise; not the NRU's memory heads);
* ``bytes floor`` — a copy of as many bytes as the executor's pointwise pass reads and writes
  per step (its layout: projections, GEMM output, states, kept activations, output; backward
  their gradients), the time those bytes take at this size;
* ``<backend>`` — the chunk call of each backend that runs the cell here, the reference too;
* ``<backend> pointwise alone`` — the compiled executor with its GEMMs switched off
  (``set_gemms``): the fused pointwise passes and the loop around them.

On CPU pytest-benchmark times each candidate (:mod:`.pytest_timer`); on a GPU the candidates are
interleaved with CUDA events (:mod:`.timing`).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch

from ..backends.base import Chunk
from .suite import Comparison
from .timing import Candidate

#: (K, B, I, H): steps per chunk and the sizes
DEFAULT = ((32, 32, 256, 256),)
FULL = ((32, 32, 256, 256), (32, 1, 64, 64))
QUICK = ((4, 3, 5, 8),)
ROTATE = 3
#: pytest-benchmark's budget per candidate: (max seconds, min rounds, passes over the candidates)
PYTEST = {"quick": (0.01, 2, 1), "default": (0.5, 9, 3), "full": (1.0, 15, 5)}
ROUNDS = {"quick": (1, 2), "default": (3, 10), "full": (5, 30)}


@contextlib.contextmanager
def gemms_off(module: Any) -> Iterator[None]:
    was = module.set_gemms(False)
    try:
        yield
    finally:
        module.set_gemms(was)


def executor_module(backend: Any, device: torch.device) -> Any | None:
    """The compiled module behind ``backend`` (revrnn._C or ._C_cuda), or None."""
    if getattr(backend, "glue", None) != "executor":
        return None
    from ..backends.compiled import target
    return target(device).module


class Setup:
    """One layer of ``case`` on ``device`` and ROTATE chunks of inputs for it: projections, start
    states, and for backward one forward's residuals and random output and state gradients."""

    def __init__(self, case: Any, shape: tuple[int, int, int, int], device: torch.device) -> None:
        K, B, I, H = shape
        torch.manual_seed(0)
        self.module = case.make(I, H, backend="reference").to(device)
        self.module.train()
        self.cell = self.module.cells[0]
        self.p = self.module.cell_params(0)
        x = torch.randn(K, B, I, device=device)
        self.extras = self.cell.extras(self.p, B, x, True)
        with torch.no_grad():
            self.chunks = [Chunk(0, self.cell.project(self.p, torch.randn_like(x), None, True).contiguous(), None)
                           for _ in range(ROTATE)]
        self.states = [tuple(torch.randn_like(s) for s in self.cell.initial_state(B, x)) for _ in range(ROTATE)]

    def forward(self, backend: Any) -> Callable[[int], None]:
        def run(i: int) -> None:
            k = i % ROTATE
            backend.forward_chunk(self.cell, self.p, self.extras, self.chunks[k], self.states[k], True)
        return run

    def backward(self, backend: Any) -> Callable[[int], None]:
        made = []
        for chunk, state in zip(self.chunks, self.states):
            out, end, residuals = backend.forward_chunk(self.cell, self.p, self.extras, chunk, state, True)
            made.append((residuals, torch.randn_like(out), tuple(torch.randn_like(s) for s in end)))

        def run(i: int) -> None:
            k = i % ROTATE
            residuals, grad_out, grad_state = made[k]
            backend.backward_chunk(self.cell, self.p, self.extras, self.chunks[k], residuals, grad_out, grad_state)
        return run

    def gemms(self, backward: bool) -> Callable[[int], None]:
        """The chunk's recurrent GEMMs alone (see the module docstring); with ``proj_size`` the
        projection's too (h = mid W_hr^T per step; backward d mid = d h W_hr and d W_hr)."""
        K, B, _ = self.chunks[0].xp.shape
        made = []
        for w in (self.p[k].detach() for k in ("weight_hh", "weight_hr") if k in self.p):
            new = dict(device=w.device, dtype=w.dtype)
            G, P = w.shape  # out = in W^T: in (B, P), out (B, G)
            made.append((w, torch.randn(B, P, **new), torch.randn(B, G, **new),
                         torch.randn(K * B, P, **new), torch.randn(K * B, G, **new)))

        def run(i: int) -> None:
            for w, x, y, xs, ys in made:
                for _ in range(K):
                    torch.mm(y, w) if backward else torch.mm(x, w.t())
                if backward:
                    torch.mm(ys.t(), xs)
        return run

    def step_bytes(self, runner: Any, backward: bool) -> int | None:
        """Bytes the executor's pointwise pass reads and writes per step (its layout), or None
        where the runner is not the executor's."""
        if not hasattr(runner, "acts"):
            return None
        B, H = self.chunks[0].xp.shape[1], self.cell.hidden_size
        states = sum(self.cell.state_sizes)
        xp, rec, act, y = runner.xp_gates * H, runner.gates * H, runner.acts * H, self.cell.state_sizes[0]
        if backward:  # act, states before/after and grad_y in; d states in and out, d xp, d rec out
            per_row = act + 2 * states + y + 2 * states + xp + (0 if runner.rec_is_xp else rec)
        else:  # xp and rec in, states before in and after out, act and y out
            per_row = xp + rec + 2 * states + act + y
        return B * per_row * self.chunks[0].xp.element_size()

    def copy(self, nbytes: int) -> Callable[[int], None]:
        """Copies reading and writing ``nbytes`` in all per call, K times (a step each)."""
        K = self.chunks[0].xp.shape[0]
        n = max(1, nbytes // 8)  # float32: half the bytes read, half written
        src = [torch.randn(n, device=self.chunks[0].xp.device) for _ in range(ROTATE)]
        dst = torch.empty_like(src[0])

        def run(i: int) -> None:
            for _ in range(K):
                dst.copy_(src[i % ROTATE])
        return run


def build(case: Any, shape: tuple[int, int, int, int], device: torch.device, backward: bool
          ) -> Callable[[], list[Candidate]]:
    def make() -> list[Candidate]:
        from ..backends import available_backends, get_backend

        K = shape[0]
        s = Setup(case, shape, device)
        out = [Candidate("GEMMs alone", s.gemms(backward), K)]
        names = ["reference", *(n for n, why in available_backends(device).items() if why is None and n != "reference")]
        floor = None
        for name in names:
            backend = get_backend(name, device)
            if not backend.supports(s.cell, torch.float32):
                continue
            run = s.backward(backend) if backward else s.forward(backend)
            out.append(Candidate(name, run, K))
            module = executor_module(backend, device)
            if module is not None:
                pointwise = run

                def alone(i: int, pointwise=pointwise, module=module) -> None:
                    with gemms_off(module):
                        pointwise(i)
                out.append(Candidate(f"{name} pointwise alone", alone, K))
                floor = floor or s.step_bytes(backend.runner_for(s.cell), backward)
        if floor:
            out.insert(1, Candidate("bytes floor", s.copy(floor), K, extra={"bytes_per_step": floor}))
        return out
    return make


def comparisons(device: torch.device, size: str, only: list[str] | None = None) -> list[Comparison]:
    """The suite at ``size`` ("quick", "default" or "full") on ``device``; ``only`` as in the
    ``sequence`` suite (:func:`.sequence.picked`)."""
    from .sequence import label, picked

    shapes = {"quick": QUICK, "default": DEFAULT, "full": FULL}[size]
    chosen = [c for c in picked(only) if "reversible" not in c.module_class().memory_modes]
    max_time, min_rounds, passes = PYTEST[size]
    warmup, repeats = ROUNDS[size]
    timer = "pytest" if device.type == "cpu" else "interleave"
    out = []
    for case in sorted(chosen, key=lambda c: c.name):
        for K, B, I, H in shapes:
            for backward in (False, True):
                name = f"{label(case)} B={B} H={H} {'backward' if backward else 'forward'}"
                out.append(Comparison(dict(suite="kernels", case=name, T=K, B=B, I=I, H=H, dtype="float32",
                                           columns="kernels", backward=backward),
                                      build(case, (K, B, I, H), device, backward), warmup, repeats, timer,
                                      dict(max_time=max_time, min_rounds=min_rounds, passes=passes)))
    return out
