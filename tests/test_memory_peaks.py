"""Memory that does not grow with T, measured independently of revrnn's accounting: the peak
resident set of a fresh process above its baseline (revrnn.profile.process), for every backend
here and the strategies that promise it.

The children map every allocation of 64 KiB or more on its own (revrnn.profile.process.MAPPED),
so that their resident set follows the live allocations: with glibc's default heap, what it
retains after frees moves the peak by tens of MiB from run to run (measured: 54 to 136 MiB of
growth for the same configuration).

Each configuration trains one step at two lengths T1 < T2. Without the streamed loss the user's
outputs (T·B·H) grow with T by design, and nothing else may: at the peak either they or their
gradient is alive, so the peak may grow by at most 1.25 times one such tensor's growth plus a
slack (the resident set rounds to pages, the allocator maps in its own blocks, and a ⌈√T⌉-step
chunk of residuals grows too: about 16·B·H floats per step of the chunk with its re-projection,
the gradients of both and the backward's buffers; 46 more steps at the CPU shapes, 6 MiB of a
12 MiB slack; 10 more at Triton's, 2.5 MiB of a 4 MiB slack, measured growth 8.7-9.6 MiB against
a 11.5 MiB budget). A strategy that kept anything per step would add at least one state (B·H)
per step, as much again as the outputs' growth, which the margin cannot hide: keeping every
step's state in a reversible backward, or every chunk's residuals in a recompute, fails here.
With the streamed loss nothing of size T exists, and the peak may grow by the slack at most.
"""
from __future__ import annotations

import os

import pytest

import revrnn
from revrnn.profile.process import Run, measure

MiB = 2 ** 20
needs_proc = pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc")
pytestmark = needs_proc

#: backend -> (T1, T2, batch, hidden, slack): Triton's interpreter runs every program of a launch
#: in Python, so few steps of few elements there, and a slack sized to its chunk's growth. T1 is
#: at least two of the reversible Function's chunks (64 steps), whose per-step records backward holds.
SHAPES = {"reference": (1000, 6000, 32, 64, 12 * MiB), "cpu": (1000, 6000, 32, 64, 12 * MiB),
          "triton": (192, 576, 16, 256, 4 * MiB)}
CONFIGS = [("gru", "ckpt"), ("gru", "revolve:16"), ("revgru", "reversible")]
STREAMED = [("gru", "bptt"), ("revgru", "reversible")]
#: what Triton's interpreter runs here, a minute or two each: its own chunk loops (recompute's, the
#: reversible half-updates'); the revolve schedule and the streamed loss are the engine's and
#: stream_backward's, the same Python on every backend, measured on the others
TRITON = [("gru", "ckpt"), ("revgru", "reversible")]


def backends() -> list[str]:
    return [b for b in SHAPES if revrnn.available_backends()[b] is None]


def cases(configs, triton=()) -> list:
    return [pytest.param(b, m, s, id=f"{m}-{s}-{b}") for b in backends() for m, s in configs
            if b != "triton" or (m, s) in triton]


def grows(backend: str, model: str, strategy: str, stream: bool = False) -> tuple[int, int]:
    """(the peak's growth from T1 to T2, the growth of what the user keeps) in bytes."""
    T1, T2, batch, hidden, _ = SHAPES[backend]
    peaks = []
    for T in (T1, T2):
        run = Run(model, strategy, T=T, batch=batch, input_size=8, hidden=hidden, backend=backend, threads=1,
                  forget_bits=0 if model.startswith("rev") else None, stream=stream, chunk=T1 // 4 if stream else None)
        peak = measure(run, timeout=600, mapped=True)
        assert peak.error is None and peak.peak_bytes, peak
        peaks.append(peak.peak_bytes)
    user = 0 if stream else (T2 - T1) * batch * hidden * 4
    return peaks[1] - peaks[0], user


@pytest.mark.parametrize("backend, model, strategy", cases(CONFIGS, TRITON))
def test_only_the_outputs_grow(backend, model, strategy):
    growth, user = grows(backend, model, strategy)
    assert growth <= 1.25 * user + SHAPES[backend][4], f"peak grew {growth / MiB:.1f} MiB from T1 to T2; outputs {user / MiB:.1f} MiB"


@pytest.mark.parametrize("backend, model, strategy", cases(STREAMED))
def test_streamed_does_not_grow(backend, model, strategy):
    """The streamed loss around a model that stores its chunk, and around a reversible one (the
    strategies inside a chunk are the tests above)."""
    growth, _ = grows(backend, model, strategy, stream=True)
    assert growth <= SHAPES[backend][4], f"streamed: peak grew {growth / MiB:.1f} MiB from T1 to T2"
