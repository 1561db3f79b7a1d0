"""Training tasks that need no download, each deterministic in (seed, split, batch index).

Every task hands out :class:`Batch` es of the same form, so that one training loop
(:mod:`revrnn.trainer`) serves them all: the inputs per step (tokens or features), a target per
step and which steps are scored. A task whose consecutive batches continue the same text
(``carries``) is trained with the state carried from one batch to the next.

:data:`TASKS` names them; each class's ``summary`` says in a line what it is (``revrnn train
--help`` lists them).
"""
from __future__ import annotations

from .base import IGNORE, Batch, Task, generator
from .digits import Digits, PermutedDigits
from .generated import ADDING_BASELINE_MSE, Adding, Copy, Denoise, adding_problem
from .seq2seq import Reverse
from .text import Chars

#: every task by name (the ``revrnn train --task`` choices)
TASKS: dict[str, type[Task]] = {t.name: t for t in (Copy, Adding, Denoise, Digits, PermutedDigits, Chars, Reverse)}


def make(name: str, **kwargs) -> Task:
    """The task ``name`` (one of :data:`TASKS`) with its keyword arguments (``T``, ``seed`` ...)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {name!r}")
    return TASKS[name](**kwargs)


__all__ = ["ADDING_BASELINE_MSE", "IGNORE", "TASKS", "Adding", "Batch", "Chars", "Copy", "Denoise", "Digits", "PermutedDigits",
           "Reverse", "Task", "adding_problem", "generator", "make"]
