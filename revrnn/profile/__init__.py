"""The memory profiler: activation memory, time and gradient error of training strategies vs T.

* :func:`memory_sweep` — one row per (strategy, T), a :class:`Report` with ``table()``,
  ``to_csv()``, ``to_json()``, ``plot()`` and ``slopes()``;
* :func:`track` — the same accounting around a user's own training step;
* :func:`saved_per_step` — what one step of a cell saves for backward (α).

``revrnn profile`` (and ``python -m revrnn.profile``) runs a sweep from the command line.
"""
from .steps import SavedTensor, StepSaved, saved_per_step
from .strategy import Strategy
from .sweep import ACCOUNTING, Report, Row, cell_factory, memory_sweep
from .track import Tracker, track

__all__ = ["memory_sweep", "cell_factory", "Report", "Row", "Strategy", "track", "Tracker",
           "saved_per_step", "StepSaved", "SavedTensor", "ACCOUNTING"]
