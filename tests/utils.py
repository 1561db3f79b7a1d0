"""Shared checks for cell and module tests."""
from __future__ import annotations

import copy
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def load_script(path: Path) -> ModuleType:
    """A script (e.g. a benchmark in bench/) imported as a module, to call its ``main``."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rel_err(a: Tensor, b: Tensor, floor: float = 1.0) -> float:
    """The largest error of an entry relative to its own magnitude, ``max |a - b| / max(|b|,
    floor · max |b|)``. ``floor = 1`` is one relative error per tensor; a smaller floor holds an
    entry k× smaller than the tensor's largest to a k× smaller error (down to the floor), so a
    small block (one gate's bias gradient) cannot hide behind the large ones."""
    if not b.numel():
        return 0.0
    scale = b.abs()
    scale = torch.maximum(scale, (floor * scale.max()).clamp_min(torch.finfo(b.dtype).tiny))
    return ((a - b).abs() / scale).max().item()


#: rounding error of an entry, in units of its dtype's eps times the tensor's largest entry:
#: an entry is a sum of terms about as large as the tensor's typical entries, and where they
#: cancel what remains is their rounding error, which grows like √n for n terms (n ≤ 256 here:
#: the input and hidden sizes per step, batch × steps in a weight gradient)
CANCELLATION = 16.0


def floor_for(dtype: torch.dtype, rtol: float) -> float:
    """The :func:`rel_err` floor at which a ``dtype`` computation checked to ``rtol`` is not
    failed by cancellation alone: an entry's rounding error ``CANCELLATION · eps · max`` must stay
    ``≤ rtol · floor · max``. Float64 at 1e-12 gets 3.6e-3 (entries 280× below the largest
    are still checked relative to themselves); half precision gets 1 (per tensor)."""
    return min(1.0, CANCELLATION * torch.finfo(dtype).eps / rtol)


def as_tuple(state) -> tuple[Tensor, ...]:
    return (state,) if isinstance(state, Tensor) else tuple(state)


def loss_of(output: Tensor, state) -> Tensor:
    """A loss that touches every output and every final state with distinct weights."""
    total = 0
    for k, t in enumerate((output, *as_tuple(state))):
        w = torch.linspace(-1, 1, t.numel(), dtype=t.dtype, device=t.device).view_as(t)
        total = total + (w * t).sum() * (k + 1)
    return total


def grads(module: nn.Module, x: Tensor, hx=None) -> dict[str, Tensor]:
    """Output, final state and the gradient of :func:`loss_of` wrt input, state and parameters."""
    x = x.detach().requires_grad_()
    hx = None if hx is None else tuple(h.detach().requires_grad_() for h in as_tuple(hx))
    arg = hx if hx is None or len(hx) > 1 else hx[0]
    out, state = module(x, arg)
    named = dict(module.named_parameters())
    inputs = [x, *(hx or ()), *named.values()]
    g = torch.autograd.grad(loss_of(out, state), inputs, allow_unused=True, materialize_grads=True)
    result = {"output": out.detach(), "x.grad": g[0]}
    result.update({f"state{k}": s.detach() for k, s in enumerate(as_tuple(state))})
    n = len(hx or ())
    result.update({f"hx{k}.grad": g[1 + k] for k in range(n)})
    result.update({f"{k}.grad": v for k, v in zip(named, g[1 + n:])})
    return result


def assert_close_all(got: dict[str, Tensor], want: dict[str, Tensor], rtol: float,
                     floor: float | None = None) -> None:
    """Every tensor of ``got`` within ``rtol`` of ``want``'s, entry by entry (:func:`rel_err`),
    down to the floor that rounding in ``got``'s dtype allows, or ``floor`` where the two differ
    by more than rounding (``floor=1``: a model difference as large as the tensor's scale)."""
    assert got.keys() == want.keys()
    for key in want:
        err = rel_err(got[key], want[key], floor_for(got[key].dtype, rtol) if floor is None else floor)
        assert err <= rtol, f"{key}: relative error {err:.3g} > {rtol:.1g} (per entry)"


def assert_recompute_matches_store(make: Callable[..., nn.Module], x: Tensor, every=(1, 3, None),
                                   rtol: float = 1e-12) -> None:
    """``memory="recompute"`` gives the same outputs and gradients as ``store`` (float64)."""
    torch.manual_seed(0)
    store = make(memory="store")
    want = grads(store, x)
    for k in every:
        other = make(memory="recompute", checkpoint_every=k)
        other.load_state_dict(store.state_dict())
        assert_close_all(grads(other, x), want, rtol)


def gradcheck_module(module: nn.Module, x: Tensor, hx=None, fast_mode: bool = False) -> None:
    """``torch.autograd.gradcheck`` in float64 wrt the input, the initial state and every
    parameter; ``fast_mode`` compares one random projection ``vᵀ J u`` instead of every entry
    of the Jacobian (two runs in all instead of two per input element)."""
    module = copy.deepcopy(module).double()
    names = [k for k, p in module.named_parameters() if p.requires_grad]
    x = x.double().detach().requires_grad_()
    hx = () if hx is None else tuple(h.double().detach().requires_grad_() for h in as_tuple(hx))
    params = [module.get_parameter(k).detach().clone().requires_grad_() for k in names]

    def f(x, *rest):
        state, ps = rest[:len(hx)], rest[len(hx):]
        arg = None if not state else state[0] if len(state) == 1 else state
        out, final = torch.func.functional_call(module, dict(zip(names, ps)), (x, arg))
        return (out, *as_tuple(final))

    assert torch.autograd.gradcheck(f, (x, *hx, *params), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast_mode)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def assert_packed_matches_separate(m: nn.Module, x: Tensor, lengths: list[int], rtol: float = 1e-12) -> None:
    """A PackedSequence batch gives each sequence's output, final state (every state tensor)
    and the summed gradients of running every sequence on its own."""
    T, B, _ = x.shape
    g = torch.Generator().manual_seed(123)
    params = list(m.parameters())

    xp = x.clone().requires_grad_()
    out, state = m(pack_padded_sequence(xp, torch.tensor(lengths), enforce_sorted=False))
    out, _ = pad_packed_sequence(out, total_length=T)
    state = as_tuple(state)
    w_out = torch.randn(out.shape, generator=g, dtype=out.dtype)
    w_state = [torch.randn(s.shape, generator=g, dtype=s.dtype) for s in state]
    loss = (w_out * out).sum() + sum((w * s).sum() for w, s in zip(w_state, state))
    got = torch.autograd.grad(loss, [xp, *params])

    xs = x.clone().requires_grad_()
    loss = 0
    for b, L in enumerate(lengths):
        o, s = m(xs[:L, b:b + 1])
        s = as_tuple(s)
        assert rel_err(out[:L, b], o[:, 0]) < rtol
        assert not out[L:, b].any()  # padding
        for sp, si in zip(state, s):
            assert rel_err(sp[:, b], si[:, 0]) < rtol
        loss = loss + (w_out[:L, b:b + 1] * o).sum()
        loss = loss + sum((w[:, b:b + 1] * si).sum() for w, si in zip(w_state, s))
    want = torch.autograd.grad(loss, [xs, *params])
    for a, b in zip(got, want):
        assert rel_err(a, b) < rtol


def valid_mask(T: int, lengths: list[int]) -> Tensor:
    return torch.arange(T)[:, None] < torch.tensor(lengths)[None, :]


def snapshot(m: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def randomise_bn(m: nn.Module) -> None:
    """Non-trivial γ, β and running statistics."""
    with torch.no_grad():
        for name, t in m.named_buffers():
            t.copy_(torch.rand_like(t) + 0.5 if "var" in name else torch.randn_like(t))
        for name, t in m.named_parameters():
            if name.startswith("bn_"):
                t.copy_(torch.randn_like(t) * 0.5 + (1 if "weight" in name else 0))


def assert_low_precision(ref64: nn.Module, x: Tensor, dtype: torch.dtype, ulps: int = 16,
                         backend: str = "triton", factor: float = 2) -> None:
    """A copy of ``ref64`` (float64, reference backend) in ``dtype`` on ``backend`` is no
    further from float64 than ``factor`` times the reference's own error in ``dtype``, plus
    ``ulps``·eps, in every output, state and gradient, whose dtypes match the reference's.
    ``ref64`` takes the weights rounded to ``dtype`` first, and ``x`` is rounded too, so all runs
    start alike."""
    low = copy.deepcopy(ref64).to(dtype)
    ref64.load_state_dict({k: v.double() for k, v in low.state_dict().items()})
    tri = copy.deepcopy(low)
    tri.backend = backend
    x = x.to(dtype)
    truth, ref, got = grads(ref64, x.double()), grads(low, x), grads(tri, x)
    eps = torch.finfo(dtype).eps
    for key in truth:
        bound = factor * rel_err(ref[key].double(), truth[key]) + ulps * eps
        err = rel_err(got[key].double(), truth[key])
        assert got[key].dtype == ref[key].dtype, key
        assert err <= bound, f"{key}: {backend} {err:.3g} from float64, reference {dtype} {bound:.3g} allowed"


def rounding_spread(module: nn.Module, x: Tensor, hx, want: dict[str, Tensor], floor: float) -> float:
    """How far :func:`grads` of ``module`` moves from ``want`` when every parameter entry moves by
    about one rounding of its dtype (times 1 + δ, δ ~ N(0, eps²)): the largest :func:`rel_err`.
    Two correct implementations that round differently cannot be told apart below it; for most
    cells it is a few eps, for a cell whose state grows without decay (the NRU's memory) it can
    be 10⁷ eps."""
    moved = copy.deepcopy(module)
    with torch.no_grad():
        for p in moved.parameters():
            p.mul_(1 + torch.finfo(p.dtype).eps * torch.randn_like(p))
    got = grads(moved, x, hx)
    return max(rel_err(got[k], want[k], floor) for k in want)


def packed_grads(module: nn.Module, x: Tensor, lengths: Tensor, seed: int | None = None) -> dict[str, Tensor]:
    """The padded output, input gradient, final states and parameter gradients of ``module`` on
    ``x`` packed to ``lengths`` (the RNG seeded first when ``seed`` is given, for dropout)."""
    xi = x.clone().requires_grad_()
    if seed is not None:
        torch.manual_seed(seed)
    out, state = module(pack_padded_sequence(xi, lengths, enforce_sorted=False))
    padded, _ = pad_packed_sequence(out)
    loss_of(padded, state).backward()
    return {"out": padded.detach(), "x.grad": xi.grad,
            **{f"state{k}": s.detach() for k, s in enumerate(as_tuple(state))},
            **{k: p.grad for k, p in module.named_parameters()}}


def assert_glstm_closed_steps_pass_through(m: nn.Module) -> None:
    """A g-LSTM (float64, input size 5, hidden size 4) whose gates never open over 8 steps keeps
    its state bit-exactly and outputs it at every step."""
    with torch.no_grad():
        m.cell_params(0)["mu"].fill_(100.0)
        m.cell_params(0)["sigma"].fill_(1.0)
    h0, c0 = torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 2, 4, dtype=torch.float64)
    out, (h, c) = m(torch.randn(8, 2, 5, dtype=torch.float64), (h0, c0))
    assert torch.equal(h, h0) and torch.equal(c, c0) and torch.equal(out, h0.expand(8, 2, 4))


def assert_glstm_sparse_matches(backend, m: nn.Module, ref: nn.Module, x: Tensor, rnn: nn.Module,
                                recompute: bool) -> None:
    """``m`` on ``backend``: its g-LSTM sparse path gives its dense path's and the reference
    ``ref``'s results, and the backend counts exactly the open unit-steps of ``rnn`` (``m``'s
    g-LSTM) that it computed."""
    backend.glstm_sparse = "never"
    dense = grads(m, x)
    backend.glstm_sparse = "always"
    backend.sparse_work.open = backend.sparse_work.total = 0
    sparse = grads(m, x)
    assert_close_all(sparse, dense, 1e-12)
    assert_close_all(sparse, grads(ref, x), 1e-12)
    k = rnn.cells[0].time_gate(rnn.cell_params(0), torch.arange(x.shape[0]))
    passes = 2 if recompute else 1  # recompute re-runs every chunk's forward once
    work = backend.sparse_work
    assert work.open == passes * int((k > 0).sum()) and work.total == passes * k.numel()
    assert work.skipped_fraction > 0.7


COUNTING_MALLOC = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
static long calls;
long revrnn_test_malloc_calls(void) { return __atomic_load_n(&calls, __ATOMIC_RELAXED); }
void* malloc(size_t n) {
  static void* (*real)(size_t);
  if (!real) real = (void* (*)(size_t))dlsym(RTLD_NEXT, "malloc");
  __atomic_add_fetch(&calls, 1, __ATOMIC_RELAXED);
  return real(n);
}
"""


def malloc_calls(tmp_path: Path, script: str, *args: str) -> list:
    """What ``script`` prints last (a list of malloc call counts), run with ``args`` in a fresh
    Python with an interposed malloc that counts calls (``revrnn_test_malloc_calls()`` through
    ctypes)."""
    import pytest
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the counting malloc")
    src, lib = tmp_path / "count.c", tmp_path / "libcount.so"
    src.write_text(COUNTING_MALLOC)
    subprocess.run([cc, "-shared", "-fPIC", "-O1", str(src), "-o", str(lib), "-ldl"], check=True)
    run = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                         env={**os.environ, "LD_PRELOAD": str(lib)})
    assert run.returncode == 0, run.stderr
    return eval(run.stdout.strip().splitlines()[-1])


#: the modules whose compiled or Triton backward must not read the projection (one per runner)
NO_PROJECTION_MODULES = {"GRU": {}, "LSTM": {}, "LSTM proj": dict(proj_size=3),
                         "GRU reset-before": dict(reset_after=False), "MGU": {}, "LiGRU": {}, "LiBRU": {},
                         "NRU": dict(memory_size=8, num_heads=2), "KAFLSTM": dict(kaf_size=5), "GLSTM": dict(t_max=8)}


def assert_store_keeps_no_projection(backend_name: str, module: str, memory: str = "store") -> None:
    """Under ``store`` the engine keeps no copy of the projection for a backend whose backward
    reads only its residuals (``Backend.backward_reads_xp`` False): the projection is freed when
    the forward returns (``recompute`` of a projection handed in whole re-runs chunks from it and
    keeps it). A backward that read it anyway would see zeros: the gradients of the input and of
    the recurrent parameters are held to the reference's."""
    import weakref

    import revrnn
    from revrnn.backends import resolve
    from revrnn.engine import Plan, run_sequence

    T, B, I, H = 7, 3, 5, 9
    runs = []
    for name in (backend_name, "reference"):
        torch.manual_seed(0)
        m = getattr(revrnn.nn, module.split()[0])(I, H, dtype=torch.float64, backend=name,
                                                   **NO_PROJECTION_MODULES[module])
        cell, p = m.cells[0], m.cell_params(0)
        x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
        backend = resolve(name, cell, x.device, x.dtype)
        recurrent = {s.name: p[s.name] for s in cell.param_specs() if s.recurrent}
        plan = Plan(cell=cell, backend=backend, memory=memory, extras=cell.extras(p, B, x, True))
        xp = cell.project(p, x, None, True)  # not a leaf: nothing but the engine could keep it
        alive = weakref.ref(xp)
        out, state = run_sequence(plan, xp, cell.initial_state(B, x), recurrent)
        del xp
        if name == backend_name:
            assert (alive() is None) == (memory == "store")
        (out.square().sum() + sum(s.sum() for s in state)).backward()
        runs.append([x.grad, *(v.grad for v in recurrent.values())])
    for got, want in zip(*runs):  # None: a parameter that takes no gradient (the KAF dictionary)
        assert (got is None and want is None) or rel_err(got, want) < 1e-12
