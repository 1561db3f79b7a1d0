"""The ``sequence`` suite: one training step over a whole sequence, ``loss = out.sum() + Σ final
states; loss.backward()`` with the input requiring grad, for every catalog case with a benchmark
label or a torch.nn twin, against the strongest baselines in the same rounds:

* ``torch.nn`` — the twin, where torch.nn has the cell (oneDNN on CPU; cuDNN on a GPU, TF32 off so
  that it does the arithmetic revrnn does, and beside it ``torch.nn TF32``, torch's default); the
  comparison's baseline where it exists;
* ``torch.nn + checkpoint`` — the twin under ``torch.utils.checkpoint`` over ⌈√T⌉-step chunks;
* ``revrnn <backend>`` — each compiled backend that runs the cell here (``cpu``; ``triton``,
  ``cuda``), and Triton's persistent whole-chunk kernels for the LSTM and GRU at H ≤ 128;
* ``eager loop`` — the reference backend: the cell's step in torch ops, iterating with
  ``unbind``; the baseline of the cells torch.nn does not have;
* ``torch.compile loop`` — the same loop with the step compiled (``torch.compile(cell.step)``),
  what a user would write to fuse the step's pointwise ops;
* ``GEMM floor`` — the cell's GEMMs alone in torch (:func:`gemm_floor`): what the step costs if
  its pointwise work were free. Where it is more than a fifth of the eager loop, the 5× target
  below is out of reach of any implementation that runs those GEMMs at torch's speed.

On a GPU the cases with a twin also run in float16. The reversible cases (RevGRU, RevLSTM) run
against the torch.nn twin of the cell they are the reversible counterpart of, at their own long
length, ``memory="reversible"`` and ``"store"`` on each compiled backend. The families' own groups
follow (``Family.bench_groups``: ``<group>_comparisons`` in ``revrnn/cells/<family>/bench.py``).

Targets, checked in the full run, where they are stated: the compiled backends ≤ 1.0× torch.nn at
B=32 I=H=256 and ≤ 1.2× at B=1 I=H=64, ≥ 5× faster than the eager loop (ratio ≤ 0.2) where torch.nn
has no twin, ≤ 1.5× torch.nn for the reversible cells.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .suite import Comparison
from .timing import Candidate

#: (T, B, I, H): the default run's one shape, and the full run's (the targets' shapes); on a GPU
#: (but quick) a large and a small size
DEFAULT = ((100, 16, 128, 128),)
FULL = ((200, 32, 256, 256), (200, 1, 64, 64))
GPU = ((1000, 64, 512, 512), (1000, 16, 128, 128))
QUICK = ((6, 3, 5, 7),)
REVERSIBLE = {"default": (1000, 16, 64, 128), "full": (10_000, 16, 64, 128), "quick": (20, 3, 5, 8)}
TARGET = {(200, 32, 256, 256): 1.0, (200, 1, 64, 64): 1.2}
EAGER_TARGET = 0.2
REVERSIBLE_TARGET = 1.5
ROTATE = 3  # inputs rotated between calls


def states(state: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return state if isinstance(state, tuple) else (state,)


def training_step(forward: Callable[[Tensor], Any], xs: list[Tensor]) -> Callable[[int], None]:
    """One training step of ``forward`` on the i-th of the rotating inputs ``xs``."""
    def step(i: int) -> None:
        out, state = forward(xs[i % len(xs)])
        (out.sum() + sum(s.sum() for s in states(state))).backward()
    return step


def checkpointed(model: nn.Module, T: int) -> Callable[[Tensor], Any]:
    """``model`` (a torch.nn RNN) under ``torch.utils.checkpoint`` over ⌈√T⌉-step chunks."""
    from torch.utils.checkpoint import checkpoint

    chunk = max(1, math.isqrt(T - 1) + 1) if T > 1 else 1

    def forward(x: Tensor) -> Any:
        outs, state = [], None
        for s in range(0, x.shape[0], chunk):
            out, state = checkpoint(model, x[s:s + chunk], state, use_reentrant=False)
            outs.append(out)
        return torch.cat(outs), state
    return forward


def step_loop(module: nn.Module, compiled: bool) -> Callable[[Tensor], Any]:
    """The eager loop a user writes for ``module``'s one layer: project, then the cell's step per
    time step (compiled with ``torch.compile`` if asked); output and final state."""
    cell = module.cells[0]
    step = torch.compile(cell.step) if compiled else cell.step

    def forward(x: Tensor) -> Any:
        p = module.cell_params(0)
        B = x.shape[1]
        extras = cell.extras(p, B, x, module.training)
        state = cell.initial_state(B, x)
        outs = []
        for t, xp in enumerate(cell.project(p, x, None, module.training).unbind(0)):
            state = step(p, xp, state, t, extras)
            outs.append(state[0])
        return torch.stack(outs), state
    return forward


def gemm_floor(module: nn.Module, x: Tensor) -> Callable[[int], None]:
    """The GEMMs of one training step of ``module``'s first layer (a revrnn module) alone, from
    its weights (its 2-D ``weight*`` parameters): an input weight (G, I) projects the T·B rows of
    ``x`` and takes its two gradient GEMMs over them; a recurrent weight (G, P) multiplies a (B, P)
    operand per step forward and a (B, G) one backward, and its gradient is one GEMM over the
    sequence. The pointwise work, and the order that makes the recurrent GEMMs wait for each
    other, are what the floor leaves out."""
    cell, p = module.cells[0], module.cell_params(0)
    T, B, I = x.shape
    new = dict(device=x.device, dtype=x.dtype)
    xs = x.detach().reshape(T * B, I)
    weights = [(p[s.name].detach(), s.recurrent) for s in cell.param_specs()
               if s.name.startswith("weight") and len(s.shape) == 2 and s.trainable]
    inputs = [(w, torch.randn(T * B, w.shape[0], **new)) for w, recurrent in weights if not recurrent]
    steps = [(w, torch.randn(B, w.shape[1], **new), torch.randn(B, w.shape[0], **new),
              torch.randn(T * B, w.shape[0], **new), torch.randn(T * B, w.shape[1], **new))
             for w, recurrent in weights if recurrent]

    def step(i: int) -> None:
        for w, _ in inputs:
            torch.mm(xs, w.t())
        for _ in range(T):
            for w, h, g, _, _ in steps:
                torch.mm(h, w.t())
                torch.mm(g, w)
        for _, _, _, gs, hs in steps:
            torch.mm(gs.t(), hs)
        for w, g in inputs:
            torch.mm(g.t(), xs)
            torch.mm(g, w)
    return step


def compiled_backends(device: torch.device) -> list[str]:
    """The compiled backends that run on ``device``."""
    from ..backends import available_backends
    return [name for name, reason in available_backends(device).items() if reason is None and name != "reference"]


def setting(run: Callable[[int], None], obj: Any, name: str, value: Any) -> Callable[[int], None]:
    """``run`` with ``obj.name`` set to ``value`` during each call."""
    def wrapped(i: int) -> None:
        old = getattr(obj, name)
        setattr(obj, name, value)
        try:
            run(i)
        finally:
            setattr(obj, name, old)
    return wrapped


def plain_case(case: Any, shape: tuple[int, int, int, int], device: torch.device, dtype: torch.dtype,
               target: float | None) -> Callable[[], list[Candidate]]:
    def build() -> list[Candidate]:
        from ..backends import get_backend

        T, B, I, H = shape
        torch.manual_seed(0)
        xs = [torch.randn(T, B, I, device=device, dtype=dtype, requires_grad=True) for _ in range(ROTATE)]
        eager = case.make(I, H, backend="reference").to(device, dtype)
        out: list[Candidate] = []
        if case.baseline:
            twin = case.make_baseline(I, H).to(device, dtype)
            twin.load_state_dict(eager.state_dict())
            out.append(Candidate("torch.nn", training_step(twin, xs), T))
            if device.type == "cuda" and dtype == torch.float32:  # torch's default: cuDNN in TF32
                out.append(Candidate("torch.nn TF32", setting(training_step(twin, xs), torch.backends.cudnn,
                                                              "allow_tf32", True), T))
            out.append(Candidate("torch.nn + checkpoint", training_step(checkpointed(twin, T), xs), T))
        bound = None if target is None else ("<=", target)
        for name in compiled_backends(device):
            backend = get_backend(name, device)
            if backend.supports(eager.cells[0], dtype):
                m = case.make(I, H, backend=name).to(device, dtype)
                m.load_state_dict(eager.state_dict())
                out.append(Candidate(f"revrnn {name}", training_step(m, xs), T, bound))
                if name == "triton" and case.baseline and not case.bench and H <= 128:  # whole-chunk kernels
                    out.append(Candidate("revrnn triton persistent",
                                         setting(training_step(m, xs), backend, "persistent", "always"), T, bound))
        loop = Candidate("eager loop", training_step(eager, xs), T)
        out = [*out, loop] if case.baseline else [loop, *out]  # the baseline first
        out.append(Candidate("torch.compile loop", training_step(step_loop(eager, compiled=True), xs), T))
        out.append(Candidate("GEMM floor", gemm_floor(eager, xs[0]), T))
        return out
    return build


def reversible_case(case: Any, twin: str, shape: tuple[int, int, int, int], device: torch.device,
                    target: float | None) -> Callable[[], list[Candidate]]:
    def build() -> list[Candidate]:
        T, B, I, H = shape
        torch.manual_seed(0)
        xs = [torch.randn(T, B, I, device=device, requires_grad=True) for _ in range(ROTATE)]
        eager = case.module_class()(I, H, **case.kwargs, backend="reference").to(device)
        out = [Candidate("torch.nn", training_step(getattr(nn, twin)(I, H).to(device), xs), T)]
        for name in compiled_backends(device):
            for memory in ("reversible", "store"):
                m = case.module_class()(I, H, **case.kwargs, backend=name, memory=memory).to(device)
                m.load_state_dict(eager.state_dict())
                out.append(Candidate(f"revrnn {name}" + (" store" if memory == "store" else ""),
                                     training_step(m, xs), T,
                                     None if target is None or memory == "store" else ("<=", target)))
        return out + [Candidate("eager loop", training_step(eager, xs), T)]
    return build


def reversible_twins() -> dict[str, str]:
    """Module class name of each reversible cell -> the torch.nn class of the cell it is the
    reversible counterpart of (``Family.reversible_of``, then that module's baseline)."""
    from ..cells import FAMILIES, cases
    from ..nn import MODULES

    baseline_of = {case.module: case.baseline for _, case in cases(baseline=True)}
    return {MODULES[rev].__name__: baseline_of[MODULES[plain].__name__]
            for family in FAMILIES for plain, rev in family.reversible_of.items() if plain != rev}


def picked(only: list[str] | None) -> list[Any]:
    """The cases ``only`` names (any in the catalog), else those with a twin or a label."""
    from ..cells import cases

    if only:
        return [c for _, c in cases() if c.name in only]
    return [c for _, c in cases(baseline=True)] + [c for _, c in cases(bench=True, baseline=None)]


def label(case: Any) -> str:
    return case.bench or case.baseline or case.name


def comparisons(device: torch.device, size: str, only: list[str] | None = None) -> list[Comparison]:
    """The suite at ``size`` ("quick", "default" or "full") on ``device``; ``only``: the catalog's
    cases (any of them) and the families' groups to run, instead of the cases with a twin or a
    benchmark label and every group. Targets are checked at the full size only, where
    they are stated. On a GPU the cases with a torch.nn twin also run in float16, the dtype in
    which torch lets cuDNN pick its persistent algorithms."""
    import importlib

    from ..cells import FAMILIES

    shapes = {"quick": QUICK, "default": DEFAULT, "full": FULL}[size]
    if device.type == "cuda" and size != "quick":
        shapes = GPU
    rounds = {"quick": (1, 2), "default": (2, 5), "full": (2, 7)}[size]
    rev_rounds = {"quick": (1, 2), "default": (1, 3), "full": (1, 3)}[size]
    full = size == "full"
    twins = reversible_twins()
    out = []
    for case in (c for c in picked(only) if c.module not in twins):
        dtypes = (torch.float32, torch.float16) if device.type == "cuda" and case.baseline else (torch.float32,)
        for (T, B, I, H), dtype in ((shape, dtype) for shape in shapes for dtype in dtypes):
            target = (TARGET.get((T, B, I, H)) if case.baseline else EAGER_TARGET) if full else None
            name = str(dtype).removeprefix("torch.")
            out.append(Comparison(dict(suite="sequence", case=f"{label(case)} T={T} B={B} I={I} H={H}"
                                                              + ("" if dtype == torch.float32 else f" {name}"),
                                       T=T, B=B, I=I, H=H, dtype=name),
                                  plain_case(case, (T, B, I, H), device, dtype, target), *rounds))
    T, B, I, H = REVERSIBLE[size]
    for case in (c for c in picked(only) if c.module in twins):
        out.append(Comparison(dict(suite="sequence", case=f"{label(case)} vs torch.nn.{twins[case.module]} T={T} "
                                                          f"B={B} I={I} H={H}", T=T, B=B, I=I, H=H, dtype="float32"),
                              reversible_case(case, twins[case.module], (T, B, I, H), device,
                                              REVERSIBLE_TARGET if full else None), *rev_rounds))
    for family in FAMILIES:  # the families' own groups (revrnn/cells/<family>/bench.py)
        for group in family.bench_groups:
            if not only or group in only:
                module = importlib.import_module(f"{family.package}.bench")
                out += getattr(module, f"{group}_comparisons")(device, size)
    return out
