"""What a cell family registers in the catalog (:mod:`revrnn.cells`): its cell specs, the
modules and command-line names that build them, the backends that have glue for it, and the
cases that tests, benchmarks and the sm_90 compile sweep run.

A family is a package ``revrnn/cells/<family>/``. Its backend glue follows one convention: for
each name in :attr:`Family.backends` the module ``<package>.<name>`` defines
``runners(backend) -> pick``, where ``pick(cell)`` returns the object that runs ``cell`` on that
backend (a Triton runner, the compiled executor's glue, the reversible half-updates) or None
where the family has none for it. A glue module is named for its backend, except ``executor``,
the compiled executor's glue, which both the ``cpu`` and the ``cuda`` backend load. The backend imports the glue when it is created, never when
it runs a cell (``torch.compile`` cannot trace an import).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Mapping

from .base import CellSpec

@dataclass(frozen=True)
class Case:
    """One configuration of a family's module, named for test ids and tables.

    ``module`` is a class name of :mod:`revrnn.nn` (looked up when the case is built, since the
    modules import the cells). The flags say which suites run it:

    * ``conformance`` — the matrix of every backend and memory strategy against the float64
      reference (``tests/test_conformance.py``), and the Triton tests;
    * ``low_precision`` — the float32/bfloat16/float16 comparison against float64;
    * ``gradcheck`` — None, or the keywords that make the module small enough for gradcheck;
    * ``compile`` — the dtypes of the sm_90 compile sweep (``tests/gpu_compile.py``): ``"every"``,
      ``"some"`` (float32 only unless ``--full``), ``"low"`` (no float64), ``"float"`` (float32
      and float64) or None; ``full`` — only in the sweep's ``--full`` run;
    * ``bench`` — the case's label in ``revrnn bench`` (:mod:`revrnn.benchmark`): its suites run
      the cases with a label or a baseline;
    * ``baseline`` — the :mod:`torch.nn` class that computes the same function from the same
      arguments: the benchmark compares the case with it (cuDNN on a GPU) instead of with the
      eager loop, on a GPU also in float16 and, without a ``bench`` label, with Triton's
      persistent kernels;
    * ``triton`` — settings of the Triton backend while the case runs (persistent kernels,
      sparse paths); ``hidden`` — a hidden size the case needs instead of the suite's;
      ``scaled`` — keywords set to that fraction of the hidden size (at least 1).
    """

    name: str
    module: str
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    hidden: int | None = None
    conformance: bool = True
    low_precision: bool = False
    gradcheck: Mapping[str, Any] | None = None
    compile: str | None = None
    full: bool = False
    bench: str | None = None
    baseline: str | None = None
    scaled: Mapping[str, float] = field(default_factory=dict)
    triton: Mapping[str, Any] = field(default_factory=dict)

    def module_class(self) -> type:
        from .. import nn
        return getattr(nn, self.module)

    def arguments(self, hidden_size: int) -> tuple[int, dict[str, Any]]:
        """The hidden size and keywords the case's modules are built with."""
        hidden = self.hidden or hidden_size
        return hidden, {**self.kwargs, **{k: max(1, int(f * hidden)) for k, f in self.scaled.items()}}

    def make(self, input_size: int, hidden_size: int, **kwargs: Any):
        """The module of this case (``hidden`` overrides ``hidden_size``)."""
        hidden, own = self.arguments(hidden_size)
        return self.module_class()(input_size, hidden, **{**own, **kwargs})

    def make_baseline(self, input_size: int, hidden_size: int, **kwargs: Any):
        """The :attr:`baseline` module, built as :meth:`make` builds the case's."""
        from torch import nn
        hidden, own = self.arguments(hidden_size)
        return getattr(nn, self.baseline)(input_size, hidden, **{**own, **kwargs})


@dataclass(frozen=True)
class Family:
    """One cell family; see the module docstring."""

    name: str
    package: str
    cells: tuple[type[CellSpec], ...]
    #: command-line name -> class name in :mod:`revrnn.nn`, for modules built from
    #: ``(input_size, hidden_size)`` alone
    modules: Mapping[str, str] = field(default_factory=dict)
    #: the same for modules that also need the sequence length their time gates spread over
    #: (``t_max``): a training run builds them with its ``T``
    timed_modules: Mapping[str, str] = field(default_factory=dict)
    #: glue modules in the family's package: backend names, or ``executor`` (backends cpu and cuda)
    backends: tuple[str, ...] = ()
    cases: tuple[Case, ...] = ()
    #: benchmark groups of ``revrnn bench sequence`` that the family's ``<package>.bench`` module
    #: defines, each as ``<group>_comparisons(device, size)``
    bench_groups: tuple[str, ...] = ()
    #: for reversible families: command-line name of a module -> that of its reversible
    #: counterpart (the profiler's ``reversible`` strategy)
    reversible_of: Mapping[str, str] = field(default_factory=dict)

    def glue(self, backend: str) -> ModuleType | None:
        """The family's glue module for ``backend``, or None if it has none."""
        return importlib.import_module(f"{self.package}.{backend}") if backend in self.backends else None
