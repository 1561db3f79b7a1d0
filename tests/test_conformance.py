"""The conformance matrix: every conformance case of the catalog (:func:`revrnn.cells.cases`) ×
every backend that runs on this machine (the reference always, Triton under its interpreter,
the compiled executor when built) × every memory strategy of the cell, against the float64
reference with ``memory="store"``: output, final state and the gradient of every input, state
and parameter. Two layers, odd sizes (hidden 45 unless the case names its own), T = 7, B = 3;
and a packed (variable-length) batch, bidirectional where the cell allows it.

A case only meets the backends that implement it (``Backend.supports``); which pairs are left
out is decided from the catalog and the backends when the tests are collected, not by skipping.

Tolerances (float64). The same equations in the same order up to GEMM summation order and
libm's exp/tanh against torch's: 1e-12 relative for the engine's cells; the compiled executor
accumulates its libm differences over the steps, 1e-10 (tests/test_cpu_backend.py). The
reversible cells: ``memory="reversible"`` differentiates by hand what ``store`` differentiates by
autograd, 1e-10; Triton's σ and tanh round differently from torch's, so its quantised gates may
land on the other side of a rounding boundary, 1e-9 (tests/test_triton_reversible.py).
"""
from __future__ import annotations

import zlib

import pytest
import torch

import revrnn
from revrnn.backends import get_backend
from revrnn.cells import cases
from utils import assert_close_all, grads, packed_grads

F64 = torch.float64
I, H, T, B = 5, 45, 7, 3
STRATEGIES = {"store": {}, "recompute": dict(memory="recompute", checkpoint_every=3),
              "revolve": dict(memory="recompute", checkpoint_slots=2), "reversible": dict(memory="reversible")}
TOLERANCE = {"reference": 1e-12, "triton": 1e-12, "cpu": 1e-10}
#: the compiled paths' σ and tanh round differently from torch's, which moves a fixed-point update
#: by an LSB (see tests/reversible_checks.py: CLOSE)
REVERSIBLE_TOLERANCE = {"reference": 1e-10, "triton": 1e-9, "cpu": 1e-9}


def backends() -> list[str]:
    here = revrnn.available_backends("cpu")
    return [name for name in ("reference", "triton", "cpu") if here[name] is None]


def matrix(packed: bool) -> list:
    out = []
    for family, case in cases(conformance=True):
        module = case.make(I, H, dtype=F64)
        cell = module.cells[0]
        for name in backends():
            if not get_backend(name, torch.device("cpu")).supports(cell, F64):
                continue
            if packed:  # the reference runs its other mode here: its store is the truth itself
                strategies = (module.memory_modes[1],) if name == "reference" else ("store",)
            else:
                strategies = [m for m in module.memory_modes + (("revolve",) if "recompute" in module.memory_modes else ())
                              if not (name == "reference" and m == "store")]
            for strategy in strategies:
                out.append(pytest.param(case, name, strategy, id=f"{case.name}-{name}-{strategy}"))
    return out


def seed(request) -> None:
    """A seed from the test's id, the same in every process (``hash`` of a str is not)."""
    torch.manual_seed(zlib.crc32(request.node.name.encode()))


def pair(case, backend: str, strategy: str, **kw):
    """The float64 reference (``store``) and the module under test with the same weights. KAF
    coefficients are perturbed per unit: the init gives every unit the same row, which would
    hide a wrong row."""
    ref = case.make(I, H, dtype=F64, backend="reference", **kw)
    with torch.no_grad():
        for name, value in ref.named_parameters():
            if name.startswith("kaf_alpha"):
                value.add_(torch.randn_like(value), alpha=0.5)
    other = case.make(I, H, dtype=F64, backend=backend, **STRATEGIES[strategy], **kw)
    other.load_state_dict(ref.state_dict())
    return ref, other


def tolerance(module, backend: str) -> float:
    return (REVERSIBLE_TOLERANCE if "reversible" in module.memory_modes else TOLERANCE)[backend]


@pytest.fixture
def triton_settings():
    """Applies a case's Triton settings and restores the backend's afterwards."""
    restore = []

    def apply(case):
        if case.triton:
            backend = get_backend("triton", torch.device("cpu"))
            restore.extend((key, getattr(backend, key)) for key in case.triton)
            for key, value in case.triton.items():
                setattr(backend, key, value)
    yield apply
    if restore:
        backend = get_backend("triton", torch.device("cpu"))
        for key, value in restore:
            setattr(backend, key, value)


def seeded(module, x, **kw):
    torch.manual_seed(7)  # both modules draw the same dropout masks
    return grads(module, x, **kw)


@pytest.mark.parametrize("case,backend,strategy", matrix(packed=False))
def test_matches_reference(case, backend, strategy, request, triton_settings):
    triton_settings(case)
    seed(request)
    ref, other = pair(case, backend, strategy, num_layers=2)
    x = torch.randn(T, B, I, dtype=F64)
    assert_close_all(seeded(other, x), seeded(ref, x), tolerance(other, backend))


@pytest.mark.parametrize("case,backend,strategy", matrix(packed=True))
def test_packed(case, backend, strategy, request, triton_settings):
    """Variable length: finished rows keep their state and output 0, in both directions where
    the module has two."""
    triton_settings(case)
    seed(request)
    bidirectional = "reversible" not in case.module_class().memory_modes
    ref, other = pair(case, backend, strategy, bidirectional=bidirectional)
    x = torch.randn(9, 4, I, dtype=F64)
    lengths = torch.tensor([9, 3, 7, 1])
    assert_close_all(packed_grads(other, x, lengths, seed=3), packed_grads(ref, x, lengths, seed=3),
                     tolerance(other, backend))


@pytest.mark.parametrize("case", [c for _, c in cases(baseline=True)], ids=lambda c: c.name)
def test_baseline_is_the_same_function(case, request):
    """A case's benchmark baseline (``Case.baseline``, a torch.nn class) computes what the case
    computes: same arguments, same state_dict, outputs and gradients equal (two layers, both
    directions), so the benchmark compares like with like."""
    seed(request)
    theirs = case.make_baseline(I, H, num_layers=2, bidirectional=True, dtype=F64)
    ours = case.make(I, H, num_layers=2, bidirectional=True, dtype=F64)
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(T, B, I, dtype=F64)
    assert_close_all(grads(ours, x), grads(theirs, x), TOLERANCE["reference"])


def empty_batch_matrix() -> list:
    return [pytest.param(case, name, id=f"{case.name}-{name}") for _, case in cases(conformance=True)
            for name in backends() if get_backend(name, torch.device("cpu")).supports(case.make(I, H).cells[0], F64)]


@pytest.mark.parametrize("case,backend", empty_batch_matrix())
def test_empty_batch(case, backend, request, triton_settings):
    """A batch of 0 rows gives what torch.nn gives: an empty output and final state, and zero
    gradients (batch norm in training refuses it, as torch's does)."""
    triton_settings(case)
    seed(request)
    module = case.make(I, H, dtype=F64, backend=backend, num_layers=2)
    x = torch.randn(T, 0, I, dtype=F64, requires_grad=True)
    if getattr(module.cells[0], "batch_norm", False):
        with pytest.raises(ValueError, match="more than 1 value per channel"):
            module(x)
        return
    out, state = module(x)
    assert out.shape[:2] == (T, 0) and all(s.shape[1] == 0 for s in (state if isinstance(state, tuple) else (state,)))
    out.sum().backward()
    assert x.grad.shape == x.shape
    for name, p in module.named_parameters():
        assert p.grad is None or not p.grad.any(), name
