"""Checkpoint schedules for ``memory="recompute"``: fixed chunks, and the binomial (revolve) schedule
that is optimal for a budget of ``slots`` kept states.

Binomial checkpointing (Griewank 1992; Griewank & Walther 2000, revolve) reverses a chain of ``T``
equal-cost steps while holding at most ``slots`` states at once, the initial state included, plus
one step's residuals. With β(s, r) = C(s + r, s), the number of steps ``s`` slots can reverse with
at most ``r`` re-runs of any step, and ``r`` the least value with β(s, r) ≥ T, the least possible
number of untaped forward steps ("advances") is ``r·T − β(s + 1, r − 1)``; each step is also run
once taped, just before its backward. The uniform-cost HSM dynamic program of Gruslys et al. 2016
gives the same counts.

Everything here is pure integer arithmetic; :mod:`revrnn.engine` executes the actions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, NamedTuple


def beta(s: int, r: int) -> int:
    """C(s + r, s): how many steps ``s`` slots reverse with at most ``r`` re-runs (0 if r < 0)."""
    return math.comb(s + r, s) if r >= 0 else 0


def repetitions(T: int, slots: int) -> int:
    """The least r with β(slots, r) ≥ T."""
    r = 0
    while beta(slots, r) < T:
        r += 1
    return r


def binomial_advances(T: int, slots: int) -> int:
    """Least number of untaped forward steps that reverses ``T`` steps with ``slots`` kept states."""
    r = repetitions(T, slots)
    return r * T - beta(slots + 1, r - 1)


def split(length: int, slots: int) -> int:
    """Where to store the next state when reversing ``length`` ≥ 2 steps with ``slots`` ≥ 2.

    The split ``m`` is optimal when the right part (``length − m`` steps, one slot fewer) needs
    exactly ``r`` repetitions and the left part (``m`` steps, all slots) exactly ``r − 1``: the
    costs then add up to the closed form by Pascal's rule, β(s+1, r−1) = β(s, r−1) + β(s+1, r−2).
    """
    r = repetitions(length, slots)
    return min(beta(slots, r - 1), length - beta(slots - 1, r - 1))


class Action(NamedTuple):
    """One action of a schedule, on states indexed by time (state t is the state before step t).

    ``store t``: keep the current state (at t) in a slot. ``advance a b``: run steps a..b-1
    untaped from the current state at a. ``restore t``: the current state becomes slot t.
    ``reverse t``: run step t taped from the current state at t, then its backward.
    ``free t``: drop slot t.
    """

    op: str
    a: int
    b: int = -1


def binomial(T: int, slots: int) -> Iterator[Action]:
    """The binomial schedule reversing steps ``0 .. T-1`` with at most ``slots`` kept states.

    Slot 0 holds the initial state throughout. The first actions, up to the first ``reverse``,
    are the forward pass: it stores states on the way and ends at state ``T − 1``.
    """
    check_slots(slots)
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive int, got {T!r}")
    yield Action("store", 0)
    yield from _reverse(0, T, slots, at=0)


def _reverse(start: int, length: int, slots: int, at: int) -> Iterator[Action]:
    # Reverse steps start .. start+length-1; slot `start` is held; the current state is at `at`.
    while length > 0:
        if at != start:
            yield Action("restore", start)
        if slots == 1 or length == 1:
            end = start + length - 1  # no slot to spare: run up to the last step and reverse it
            if end > start:
                yield Action("advance", start, end)
            yield Action("reverse", end)
        else:
            m = split(length, slots)
            yield Action("advance", start, start + m)
            yield Action("store", start + m)
            yield from _reverse(start + m, length - m, slots - 1, at=start + m)
            yield Action("free", start + m)
            length = m
            at = -1
            continue
        length -= 1
        at = -1


@dataclass(frozen=True)
class ScheduleCost:
    """What a recompute schedule costs for ``T`` steps, in step evaluations and kept states.

    ``step_evaluations`` counts every run of a step: the forward pass, re-runs in backward and
    the taped run before each backward (BPTT runs each step once, untaped runs excluded).
    ``factor = step_evaluations / T``; with backward ≈ 2 forward, time vs BPTT ≈ (factor + 2) / 3.
    """

    T: int
    kind: str  # "fixed" or "binomial"
    slots: int  # states kept at once, the initial state included
    tape_steps: int  # steps whose residuals are held at once in backward
    step_evaluations: int
    repetitions: int | None = None  # binomial only

    @property
    def factor(self) -> float:
        return self.step_evaluations / self.T


def fixed_cost(T: int, every: int) -> ScheduleCost:
    """Cost of keeping the state every ``every`` steps and re-running one chunk per backward step."""
    return ScheduleCost(T, "fixed", slots=-(-T // every), tape_steps=min(every, T), step_evaluations=2 * T)


def binomial_cost(T: int, slots: int) -> ScheduleCost:
    """Cost of :func:`binomial` as the engine runs it: advances, plus one taped run per step."""
    check_slots(slots)
    return ScheduleCost(T, "binomial", slots=min(slots, T), tape_steps=1,
                        step_evaluations=binomial_advances(T, slots) + T, repetitions=repetitions(T, slots))


def default_every(T: int) -> int:
    """⌈√T⌉: the fixed chunk length that minimises kept states plus one chunk of residuals."""
    return max(1, math.isqrt(T - 1) + 1)


def chunk_length(memory: str, T: int, checkpoint_every: int | None) -> int:
    """Steps per chunk of the engine's fixed schedule: the whole sequence for ``store`` (unless
    ``checkpoint_every`` cuts it), else ``checkpoint_every`` or ⌈√T⌉. The one place that decides."""
    if memory == "store" and checkpoint_every is None:
        return T
    return checkpoint_every or default_every(T)


def check_slots(slots: int) -> None:
    if not isinstance(slots, int) or isinstance(slots, bool) or slots < 1:
        raise ValueError(f"checkpoint_slots must be a positive int, got {slots!r}")
