"""Process peaks: memory as a user sees it. Each configuration trains in a fresh Python process
(``python -m revrnn.profile.process '<json>'``), which reports the peak of the whole process above
its baseline: on CPU the kernel's resident-set high-water mark (``VmHWM``), reset once the model,
its optimiser and the input exist; on CUDA the allocator's peak above its allocation then. Beside
it the child reports revrnn's accounting (storages saved for backward), the step time and, for the
reversible cells, the information buffer. An out-of-memory (an exception, or the kernel killing
the child) is a row, not a crash.

A configuration (:class:`Run`) names a model (a :data:`revrnn.nn.MODULES` cell, or ``torch.GRU``,
``torch.LSTM``, ``torch.RNN``), a strategy (:class:`~revrnn.profile.Strategy` text for revrnn;
``bptt``, ``ckpt`` — ``torch.utils.checkpoint`` over ⌈√T⌉-step chunks — or ``save_on_cpu`` for
torch.nn), the sizes, and whether the loss is streamed (:func:`revrnn.stream_backward`) and the
input generated on request (:class:`revrnn.stream.NoiseSource`) instead of a tensor. The loss is a
linear read-out of every step's output, averaged over steps and rows.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

TORCH_MODELS = ("torch.GRU", "torch.LSTM", "torch.RNN")


@dataclass(frozen=True)
class Run:
    """One configuration; see the module docstring."""

    model: str
    strategy: str = "bptt"
    T: int = 1000
    batch: int = 16
    input_size: int = 64
    hidden: int = 128
    layers: int = 1
    stream: bool = False
    chunk: int | None = None  # the streamed loss's chunk (steps); ⌈√T⌉ when None
    generated: bool = False  # the input made on request (needs stream)
    forget_bits: int | None = None  # reversible cells: their default when None
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "float32"
    threads: int | None = None
    steps: int = 1  # training steps (AdamW); the time is their median
    seed: int = 0

    @property
    def name(self) -> str:
        parts = [self.model, self.strategy]
        if self.forget_bits is not None:
            parts.append(f"forget_bits={self.forget_bits}")
        if self.stream:
            parts.append(f"streamed ({self.chunk or '√T'}-step chunks{', generated input' if self.generated else ''})")
        return " ".join(parts)


@dataclass
class Peak:
    """What a child measured (bytes, seconds); ``peak_bytes`` is the process peak above its
    baseline, ``baseline_bytes`` that baseline (interpreter, libraries, model, optimiser, input)."""

    run: Run
    peak_bytes: int | None = None
    baseline_bytes: int | None = None
    input_bytes: int = 0
    param_bytes: int = 0
    saved_peak_bytes: int | None = None  # revrnn's accounting (not for streamed runs)
    step_s: float | None = None
    buffer_bits_per_element_step: float | None = None
    loss: float | None = None
    oom: bool = False
    error: str | None = None
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["run"] = asdict(self.run)
        d["name"] = self.run.name
        return d


#: glibc's setting that maps every allocation of at least this many bytes on its own (and unmaps
#: it when freed), instead of serving it from a heap that keeps freed memory resident
MAPPED = {"MALLOC_MMAP_THRESHOLD_": str(64 * 1024)}


def measure(run: Run, timeout: float | None = None, mapped: bool = False, repeats: int = 1) -> Peak:
    """Train ``run`` in a fresh process and return what it measured; out-of-memory, a killed
    child and a timeout are recorded in the result. With ``mapped`` (glibc only, :data:`MAPPED`)
    the resident set follows the live allocations: by default it is what a user sees, which
    includes what the allocator's heap retains after frees. That varies from process to process
    (glibc moves its mmap threshold as large blocks are freed; RevGRU reversible at T=10⁴ read
    89 to 193 MiB here, 89 MiB every time when mapped), so ``repeats`` fresh processes give the
    run whose peak is the median, with every peak in ``extra["peaks_bytes"]``; a failure in
    any of them is the result."""
    if not isinstance(repeats, int) or isinstance(repeats, bool) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    if repeats > 1:
        peaks = [measure(run, timeout, mapped) for _ in range(repeats)]
        failed = [p for p in peaks if p.peak_bytes is None]
        if failed:
            return failed[0]
        median = sorted(peaks, key=lambda p: p.peak_bytes)[(repeats - 1) // 2]
        median.extra["peaks_bytes"] = [p.peak_bytes for p in peaks]
        return median
    cmd = [sys.executable, "-m", "revrnn.profile.process", json.dumps(asdict(run))]
    env = {**os.environ, **MAPPED} if mapped else None
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return Peak(run, error=f"timed out after {timeout} s")
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode == 0 and lines:
        d = json.loads(lines[-1])
        d.pop("run")
        d.pop("name", None)
        return Peak(run, **d)
    if done.returncode in (-9, 137):  # the kernel's out-of-memory killer
        return Peak(run, oom=True, error="killed by the kernel (out of memory)")
    tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
    return Peak(run, error=f"exit {done.returncode}: {tail[:300]}")


def sweep(runs: list[Run], timeout: float | None = None, progress=None) -> list[Peak]:
    """:func:`measure` every run, in order (``progress`` wraps the iterable, e.g. ``tqdm``)."""
    return [measure(run, timeout) for run in (progress(runs) if progress else runs)]


def table(peaks: list[Peak]) -> str:
    """The rows as aligned text: process peak above baseline beside revrnn's accounting."""
    def mib(b):
        return "" if b is None else f"{b / 2 ** 20:.1f}"
    head = ("configuration", "T", "peak MiB", "accounted MiB", "input MiB", "step s", "buffer bits/elem-step", "note")
    rows = [(p.run.name, str(p.run.T), "OOM" if p.oom else mib(p.peak_bytes), mib(p.saved_peak_bytes),
             mib(p.input_bytes), "" if p.step_s is None else f"{p.step_s:.2f}",
             "" if p.buffer_bits_per_element_step is None else f"{p.buffer_bits_per_element_step:.2f}",
             p.error or "") for p in peaks]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in (head, *rows))


def _rss(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field_name}")


def reset_peak() -> int:
    """Reset the resident set's high-water mark to the current size (Linux >= 4.0) and return
    that size: the baseline :func:`peak_above` measures from. The kernel sums these counters from
    per-CPU batches, so a peak within a fraction of a MiB of its baseline may read slightly
    below it."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _rss("VmHWM")


def peak_above(baseline: int) -> int:
    """The resident set's high-water mark above ``baseline`` (from :func:`reset_peak`)."""
    return _rss("VmHWM") - baseline


def _model(run: Run, torch):
    from ..nn import MODULES
    from .strategy import Strategy
    if run.model in TORCH_MODELS:
        cls = getattr(torch.nn, run.model.split(".")[1])
        return cls(run.input_size, run.hidden, num_layers=run.layers)
    if run.model not in MODULES:
        raise ValueError(f"model must be one of {', '.join(sorted(MODULES) + list(TORCH_MODELS))}, got {run.model!r}")
    kwargs = Strategy.parse(run.strategy).module_kwargs()
    if run.forget_bits is not None:
        kwargs["forget_bits"] = run.forget_bits
    return MODULES[run.model](run.input_size, run.hidden, num_layers=run.layers, backend=run.backend, **kwargs)


def _step(run: Run, model, source, head, torch) -> float:
    """One training step's loss; gradients land in the parameters."""
    from ..stream import stream_backward

    def loss_fn(out, t0):  # the mean over every step and row: a gradient whose size does not grow with T
        return (out @ head).sum() / (run.T * run.batch)

    if run.stream:
        return stream_backward(model, source, loss_fn, chunk=run.chunk).loss
    x = source
    if run.strategy == "ckpt" and run.model in TORCH_MODELS:
        from torch.utils.checkpoint import checkpoint
        T = x.shape[0]
        K, state, loss = max(1, math.isqrt(T - 1) + 1), None, 0
        for s in range(0, T, K):
            out, state = checkpoint(model, x[s:s + K], state, use_reentrant=False)
            loss = loss + loss_fn(out, s)
    elif run.strategy == "save_on_cpu":
        with torch.autograd.graph.save_on_cpu(pin_memory=run.device == "cuda"):
            loss = loss_fn(model(x)[0], 0)
    else:
        loss = loss_fn(model(x)[0], 0)
    loss.backward()
    return float(loss.detach())


def child(run: Run) -> Peak:
    """Runs in the fresh process: build, reset the peak, train, report."""
    import torch

    from ..stream import NoiseSource
    from .track import track
    if run.threads:
        torch.set_num_threads(run.threads)
    device, dtype = torch.device(run.device), getattr(torch, run.dtype)
    torch.manual_seed(run.seed)
    model = _model(run, torch).to(device=device, dtype=dtype).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    head = torch.randn(run.hidden, device=device, dtype=dtype)
    if run.generated:
        if not run.stream:
            raise ValueError("a generated input needs the streamed loss (stream=True)")
        source = NoiseSource(run.T, run.batch, run.input_size, seed=run.seed, device=device, dtype=dtype)
    else:
        source = torch.randn(run.T, run.batch, run.input_size, device=device, dtype=dtype)
    peak = Peak(run, input_bytes=0 if run.generated else source.numel() * source.element_size(),
                param_bytes=sum(p.numel() * p.element_size() for p in model.parameters()))
    cuda = device.type == "cuda"
    # In the baseline: the optimiser's moments (they exist from the first step on) and what the
    # libraries allocate once (thread pools, BLAS buffers), from a warm-up step on 8 steps.
    warm = 8 if run.T > 8 else run.T
    _step(run, model, source.chunk(0, warm) if run.generated else source[:warm], head, torch)
    opt.step()
    opt.zero_grad(set_to_none=False)
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        peak.baseline_bytes = torch.cuda.memory_allocated(device)
        peak.method = "CUDA max_memory_allocated() above the allocation before the step"
    else:
        peak.baseline_bytes = reset_peak()
        peak.method = "peak resident set (VmHWM) above the resident set before the step"
    times = []
    try:
        for i in range(run.steps):
            t0 = time.perf_counter()
            if i == 0 and not run.stream:
                with track(device, exclude=[model, source]) as m:
                    peak.loss = _step(run, model, source, head, torch)
                peak.saved_peak_bytes = m.saved_peak_bytes
            else:
                peak.loss = _step(run, model, source, head, torch)
            opt.step()
            opt.zero_grad(set_to_none=False)
            if cuda:
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
    except (MemoryError, RuntimeError) as error:
        if not isinstance(error, MemoryError) and "out of memory" not in str(error):
            raise
        peak.oom, peak.error = True, str(error).splitlines()[0][:200]
    if cuda:
        peak.peak_bytes = torch.cuda.max_memory_allocated(device) - peak.baseline_bytes
    else:
        peak.peak_bytes = peak_above(peak.baseline_bytes)
    if times:
        times.sort()
        peak.step_s = times[len(times) // 2]
    stats = getattr(model, "last_stats", None)
    if stats is not None and stats.float32_state_bits:
        peak.buffer_bits_per_element_step = 32 * stats.used_bits / stats.float32_state_bits
    return peak


def _main(argv: list[str]) -> None:
    run = Run(**json.loads(argv[0]))
    print(json.dumps(child(run).to_dict()), flush=True)
    os._exit(0)  # skip interpreter teardown: the measurement is done


if __name__ == "__main__":
    _main(sys.argv[1:])
