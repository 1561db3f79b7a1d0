"""The catalog of cell families: the one place that lists them.

Each family is a package of this folder (spec, backend glue, cases; see
:mod:`revrnn.cells.family`) that exports ``FAMILY``. The nn modules' command-line names, the
backends' glue, the test matrix, the benchmarks and the sm_90 compile sweep all enumerate
:data:`FAMILIES`; nothing else keeps a list of cells. To add a cell, see "Adding a cell" in
docs/architecture.md.
"""
from __future__ import annotations

from .base import CellSpec, ParamSpec
from .family import Case, Family
from . import elman, glstm, gru, kaf, light, lstm, mgu, nru, reversible
from .glstm import GLSTMCell
from .gru import GRUCell
from .kaf import KAFGRUCell, KAFLSTMCell
from .light import LightCell, LiBRUCell, LiGRUCell
from .lstm import LSTMCell
from .mgu import MGUCell
from .nru import NRUCell

#: every cell family, in the order tables list them
FAMILIES: tuple[Family, ...] = tuple(m.FAMILY for m in (lstm, glstm, kaf, gru, mgu, light, nru, elman, reversible))


def family_of(cell: CellSpec) -> Family | None:
    """The family whose specs include ``type(cell)`` exactly (a subclass changes the step, so
    it is its own cell), or None for a cell outside the catalog."""
    return _BY_TYPE.get(type(cell))


def cases(**flags) -> list[tuple[Family, Case]]:
    """Every (family, case) of the catalog whose attributes equal ``flags`` (truthy for
    ``True``), e.g. ``cases(conformance=True)`` or ``cases(low_precision=True)``."""
    def match(case: Case) -> bool:
        return all(bool(getattr(case, k)) if v is True else getattr(case, k) == v for k, v in flags.items())
    return [(f, c) for f in FAMILIES for c in f.cases if match(c)]


_BY_TYPE = {cls: f for f in FAMILIES for cls in f.cells}

__all__ = ["CellSpec", "ParamSpec", "Case", "Family", "FAMILIES", "family_of", "cases", "LSTMCell", "GRUCell",
           "MGUCell", "LightCell", "LiGRUCell", "LiBRUCell", "NRUCell", "GLSTMCell", "KAFLSTMCell", "KAFGRUCell"]
