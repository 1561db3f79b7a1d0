"""Compile, for a real NVIDIA GPU (sm_90), every Triton kernel specialisation that a small CPU
forward and backward of each cell launches, without running any of them.

Why: CI has no GPU and runs the kernels in Triton's CPU interpreter, which executes the Python
AST loosely and misses errors the real compiler raises (a ``return`` whose type differs between
branches, a dtype inside a tuple assignment, ...). Here, with ``TRITON_INTERPRET`` unset, every
kernel launch is diverted to ``JITFunction.run(..., warmup=True)`` under a stand-in driver whose
target is ``GPUTarget("cuda", 90, 32)``: Triton's own binder specialises the arguments as on a
GPU and the NVIDIA backend compiles them down to a cubin with the ``ptxas`` of the Triton
install. Nothing is launched, so the outputs are garbage: each model's run past a launch is best
effort (Python-side errors are recorded, not fatal), while every compilation failure is recorded
with its kernel, constexprs and error.

Run by ``tests/test_gpu_compile.py`` in a subprocess, because ``TRITON_INTERPRET`` must be unset
before Triton is imported and ``tests/conftest.py`` sets it. By hand::

    python tests/gpu_compile.py [--json out.json] [--jobs N] [--only SUBSTRING] [--full]

The JSON holds ``{"skip": reason}`` when this environment cannot compile for NVIDIA (no
Triton, no NVIDIA backend, no ptxas), else the compiled and failed specialisations, the
kernels that launch sites name (to check each was compiled), and Python-side run errors.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback

os.environ.pop("TRITON_INTERPRET", None)  # before Triton is imported: compile, don't interpret
#: ptxas' -v log, printed by Triton's NVIDIA backend after each cubin: registers and spills
os.environ["TRITON_DUMP_PTXAS_LOG"] = "1"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9's default, without its warning
os.environ.setdefault("TRITON_DISABLE_LINE_INFO", "1")  # no debug line tables: ~10% faster, same code

ARCH = 90
MAX_ERROR = 3000


def environment_problem() -> str | None:
    """Why this environment cannot compile Triton kernels for NVIDIA, or None."""
    try:
        import triton  # noqa: F401
        from triton.backends import backends
    except Exception as err:  # noqa: BLE001 - any import failure means: cannot compile here
        return f"Triton is not importable: {err}"
    if "nvidia" not in backends:
        return f"this Triton install has no NVIDIA backend (backends: {sorted(backends)})"
    try:
        from triton.backends.nvidia.compiler import get_ptxas
        tool = get_ptxas(ARCH)  # honours TRITON_PTXAS_BLACKWELL_PATH / TRITON_PTXAS_PATH
    except Exception as err:  # noqa: BLE001
        return f"no ptxas for sm_{ARCH} in the Triton install: {err}"
    if tool is None or not os.path.exists(tool.path):
        return f"no ptxas for sm_{ARCH} in the Triton install"
    return None


# -- interception ---------------------------------------------------------------------------------

class Recorder:
    """Distinct specialisations (kernel, argument types, constexprs) and what compiling each gave.

    Each is compiled once, in a forked child: an LLVM assertion or a crashing ptxas aborts the
    child, not this run, and up to ``jobs`` children compile while the run goes on. Triton's
    alignment and integer-value attributes are not part of the identity (a kernel whose integer
    arguments vary launch by launch would otherwise compile again for each value class); how
    many such variants launched is counted."""

    def __init__(self, jobs: int, timeout: float, scratch: str) -> None:
        self.jobs, self.timeout, self.scratch = jobs, timeout, scratch  # scratch: the children's results
        self.specs: dict[tuple, dict] = {}
        self.children: dict[int, tuple[dict, str, float]] = {}
        self.child: dict | None = None  # set in a forked child: the specialisation it compiles
        self.model = "?"
        self.launches = 0

    def hook(self, *, key, fn, compile, **_):
        """Triton's ``jit_cache_hook``, called before it compiles a specialisation; returning
        True skips the compile. Here: fork a child that compiles it, skip it in this process."""
        if self.child is not None:
            return False
        params = fn.jit_function.params
        constexprs, values = {}, {}  # the kernel's constexprs; arguments Triton specialised on (== 1)
        for path, value in compile["constants"].items():
            name = params[path[0]].name + "".join(f"[{i}]" for i in path[1:])
            shown = value if isinstance(value, (bool, int, float, type(None))) else str(value)
            (constexprs if params[path[0]].is_constexpr else values)[name] = shown
        # an integer Triton specialised on its value has the type "constexpr": count it as i32
        signature = {p.name: "i32" if compile["signature"][p.name] == "constexpr" else compile["signature"][p.name]
                     for p in params if not p.is_constexpr}
        ident = (fn.module, fn.name, tuple(signature.items()), tuple((k, repr(v)) for k, v in constexprs.items()),
                 compile["num_warps"])
        spec = self.specs.get(ident)
        if spec is not None:
            spec["variants"].add(str(key))
            return True
        spec = self.specs[ident] = dict(kernel=f"{fn.module.rsplit('.', 1)[-1]}.{fn.name}", constexprs=constexprs,
                                        signature=signature, specialised=values, num_warps=compile["num_warps"],
                                        model=self.model, variants={str(key)}, status="pending")
        while len(self.children) >= self.jobs:
            self.reap(block=True)
        result = os.path.join(self.scratch, f"{len(self.specs)}.json")
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: compile (Triton carries on from here), then launch() reports
            self.child = dict(spec=spec, result=result, start=time.perf_counter())
            err = os.open(result + ".stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(err, 2)
            return False
        self.children[pid] = (spec, result, time.perf_counter())
        return True

    def launch(self, jit, grid, args, kwargs) -> None:
        """``jit[grid](*args, **kwargs)``: bind and specialise as Triton does, compile (in a child,
        through :meth:`hook`), launch nothing."""
        self.launches += 1
        out = io.StringIO()
        error = None
        try:
            with contextlib.redirect_stdout(out):
                jit.run(*args, grid=grid, warmup=True, **kwargs)
        except BaseException as err:  # noqa: BLE001 - every compilation failure is collected
            error = err
        if self.child is not None:  # never returns
            self.report(dict(status="compiled", **ptxas_usage(out.getvalue())) if error is None
                        else dict(status="failed", error=describe(error)))
        if error is None:
            return
        if not isinstance(error, Exception):
            raise error
        # raised before any compile, binding the arguments: a failure of this launch site
        name = f"{jit.fn.__module__.rsplit('.', 1)[-1]}.{jit.fn.__name__}"
        self.specs.setdefault((name, "launch", describe(error)), dict(
            kernel=name, constexprs={}, signature={}, specialised={}, num_warps=None, model=self.model,
            variants=set(), status="failed", error=describe(error)))

    def report(self, result: dict) -> None:
        """In the child: write what compiling gave and exit without returning to the run."""
        try:
            result["seconds"] = round(time.perf_counter() - self.child["start"], 3)
            with open(self.child["result"], "w") as fh:
                json.dump(result, fh)
        finally:
            os._exit(0)

    def reap(self, block: bool) -> None:
        """Collect finished children (``block``: wait for at least one); kill any past the timeout."""
        while self.children:
            for pid in list(self.children):
                done, status = os.waitpid(pid, os.WNOHANG)
                spec, result, start = self.children[pid]
                if not done:
                    if time.perf_counter() - start > self.timeout:
                        os.kill(pid, 9)
                        os.waitpid(pid, 0)
                        del self.children[pid]
                        spec.update(status="failed", error=f"compilation did not finish in {self.timeout:.0f} s")
                        block = False
                    continue
                del self.children[pid]
                block = False
                try:
                    with open(result) as fh:
                        spec.update(json.load(fh))
                except OSError:
                    with open(result + ".stderr", errors="replace") as fh:
                        log = fh.read()
                    how = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                           else f"exit status {os.WEXITSTATUS(status)}")
                    spec.update(status="failed", error=f"the compiler crashed ({how}):\n{_tail(log.strip())}")
            if not block:
                return
            time.sleep(0.01)

    def results(self) -> list[dict]:
        self.reap(block=False)
        while self.children:
            self.reap(block=True)
        return [dict(spec, variants=len(spec["variants"])) for spec in self.specs.values()]


def describe(err: BaseException) -> str:
    """The error and the errors it was raised from (a CompilationError in a called
    ``@triton.jit`` function is chained to the one at the call site)."""
    parts, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        parts.append(f"{type(err).__name__}: {err}")
        err = err.__cause__ or err.__context__
    return _tail("\n-- caused by --\n".join(parts))


def _tail(text: str) -> str:
    return text if len(text) <= MAX_ERROR else "..." + text[-MAX_ERROR:]


def ptxas_usage(log: str) -> dict:
    """Registers, spills and stack frame from ptxas' -v log (None where it printed none)."""
    def first(pattern):
        m = re.search(pattern, log)
        return int(m.group(1)) if m else None
    return dict(registers=first(r"Used (\d+) registers"), spill_stores=first(r"(\d+) bytes spill stores"),
                spill_loads=first(r"(\d+) bytes spill loads"), stack=first(r"(\d+) bytes stack frame"))


def use_compile_only_driver() -> None:
    """Make the active Triton driver one that has no device but targets sm_90."""
    from triton.backends.compiler import GPUTarget
    from triton.runtime.driver import driver

    class CompileOnlyDriver:
        """What ``JITFunction.run(warmup=True)`` asks of a driver: a device, a stream, a target."""

        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", ARCH, 32)

    driver.set_active(CompileOnlyDriver())


def intercept(recorder: Recorder) -> None:
    """Divert every ``kernel[grid](...)`` to ``recorder``."""
    from triton import knobs
    from triton.runtime.jit import JITFunction

    knobs.runtime.jit_cache_hook = recorder.hook
    JITFunction.__getitem__ = lambda self, grid: (lambda *a, **kw: recorder.launch(self, grid, a, kw))


def warm_up() -> None:
    """Compile a tiny kernel in this process, so that the compiler's one-time set-up (hashing
    Triton's sources, asking ptxas its version, loading libdevice) is done before the children
    fork rather than in each of them."""
    import torch
    import triton
    import triton.language as tl

    @triton.jit
    def _warm_up(x, y, n, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        tl.store(y + offs, tl.exp(tl.load(x + offs, mask=offs < n)).to(tl.float64), mask=offs < n)

    x = torch.zeros(4)
    with contextlib.redirect_stdout(io.StringIO()):
        _warm_up.run(x, x.double(), 3, BLOCK=16, grid=(1,), warmup=True)


def launched_kernels() -> list[str]:
    """The ``@triton.jit`` kernels that some launch site (``name[grid](...)``) of
    ``revrnn.kernels`` names, as ``module.name``."""
    import importlib
    import pkgutil

    import revrnn.kernels as pkg
    from triton.runtime.jit import JITFunction
    found = set()
    for info in pkgutil.iter_modules(pkg.__path__):
        module = importlib.import_module(f"revrnn.kernels.{info.name}")
        with open(module.__file__) as fh:
            source = fh.read()
        for name in re.findall(r"\b(\w+)\[[^\n]*?\]\(", source):
            if isinstance(getattr(module, name, None), JITFunction):
                found.add(f"{info.name}.{name}")
    return sorted(found)


# -- the runs -------------------------------------------------------------------------------------

T, B, I, H = 3, 2, 3, 16
F32, F64, BF16, F16 = "float32", "float64", "bfloat16", "float16"


def jobs_list(only: str | None = None, full: bool = False):
    """(name, make(dtype, **memory) -> module, dtypes, memories, Triton settings): every case of
    the catalog (:func:`revrnn.cells.cases`) with a ``compile`` entry, i.e. every cell family
    with kernels and the options that change a kernel's constexprs. Each runs with a full and a
    packed (variable-length) batch. Step kernels recompute (the forward keeps nothing, the
    rerun in backward keeps its residuals: KEEP false and true); reversible cells reverse and
    store (RETREAT true and false).

    To keep the test near two minutes on two cores, cases marked ``"some"`` (gate variants whose
    flags do not interact with the dtype) run in float32 only, and cases marked ``full`` not at
    all; ``full`` runs them, every case in every dtype it takes, and float16."""
    from revrnn.cells import cases

    every = (F32, F64, BF16, F16) if full else (F32, F64, BF16)
    dtypes = {"every": every, "some": every if full else (F32,),
              "low": (F32, BF16, F16) if full else (F32, BF16),  # the persistent kernels: no float64
              "float": (F32, F64)}  # the reversible cells

    def mk(case):
        return lambda dtype, **memory: case.make(I, H, dtype=dtype, backend="triton", **memory)

    out = []
    for _, case in cases():
        if case.compile is None or (case.full and not full):
            continue
        memories = ("reversible", "store") if "reversible" in case.module_class().memory_modes else ("recompute",)
        out.append((case.name, mk(case), dtypes[case.compile], memories, case.triton))
    return [job for job in out if only is None or only in job[0]]


def configure(settings):
    """Set the Triton backend's ``settings`` for a job; returns a function restoring them."""
    import torch

    from revrnn.backends import get_backend
    backend = get_backend("triton", torch.device("cpu"))
    before = {key: getattr(backend, key) for key in settings}
    for key, value in settings.items():
        setattr(backend, key, value)

    def restore():
        for key, value in before.items():
            setattr(backend, key, value)
    return restore


def drive(make, dtype, packed: bool, memory: str) -> None:
    """One forward and backward of a fresh module on a (T, B, I) batch (packed: lengths T and 1)."""
    import torch
    from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

    torch.manual_seed(0)
    # recompute in chunks of 2 and 1: the forward keeps no residuals, backward's rerun does
    module = make(dtype, memory=memory, **(dict(checkpoint_every=2) if memory == "recompute" else {}))
    x = torch.randn(T, B, I, dtype=dtype, requires_grad=True)
    inp = pack_padded_sequence(x, torch.tensor([T, 1]), enforce_sorted=False) if packed else x
    out, state = module(inp)
    out = out.data if isinstance(out, PackedSequence) else out
    states = state if isinstance(state, tuple) else (state,)
    loss = out.float().sum() + sum(s.float().sum() for s in states)
    loss.backward()


def direct_kernels(recorder: Recorder) -> list[dict]:
    """Kernels no module launches on its own: the reversible buffer's per-multiply kernels
    (``TritonBuffer``: every update/active combination) and ``kaf.alpha_grad`` in each dtype."""
    import torch

    from revrnn.kernels import kaf, reversible
    errors = []
    for has_update in (False, True):
        for has_active in (False, True):
            recorder.model = f"rev-buffer-update{int(has_update)}-active{int(has_active)}"
            h = torch.randint(-2 ** 40, 2 ** 40, (3, 5))
            n = torch.randint(1, 1025, (3, 5))
            u = torch.randint(-2 ** 23, 2 ** 23, (3, 5)) if has_update else None
            active = torch.tensor([[True], [False], [True]]) if has_active else None
            word = torch.full((3, 5), 1 << 40)
            scratch, height = torch.zeros(2, 3, 5, dtype=torch.int64), torch.zeros(3, 5, dtype=torch.int64)
            bad = torch.zeros((), dtype=torch.bool)
            try:
                reversible.multiply(h, n, u, active, word, scratch, height, 0, 1 << 50)
                reversible.divide(h, n, u, active, word, scratch, height, bad, 0)
            except Exception as err:  # noqa: BLE001
                errors.append(dict(model=recorder.model, error=describe(err)))
    for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        recorder.model = f"kaf.alpha_grad-{str(dtype).split('.')[-1]}"
        sdtype = torch.float64 if dtype == torch.float64 else torch.float32
        pre = torch.randn(T, B, 4 * H, dtype=dtype)
        dkaf = torch.randn(T, B, 3 * H, dtype=sdtype)
        try:
            kaf.alpha_grad(pre, dkaf, torch.linspace(-3, 3, 5, dtype=sdtype), torch.ones(1, dtype=sdtype), H, 2 * H)
        except Exception as err:  # noqa: BLE001
            errors.append(dict(model=recorder.model, error=describe(err)))
    return errors


def run(scratch: str, jobs: int, timeout: float, only: str | None = None, full: bool = False) -> dict:
    problem = environment_problem()
    if problem is not None:
        return {"skip": problem}
    import torch

    torch.set_num_threads(1)
    use_compile_only_driver()
    warm_up()
    recorder = Recorder(jobs, timeout, scratch)
    intercept(recorder)
    from revrnn.kernels import common, persistent
    # the kernels accept CPU tensors only under the interpreter; here they are compiled, not run
    common.triton_reason = persistent.triton_reason = lambda device: None

    start = time.perf_counter()
    run_errors = []
    for name, make, dtypes, memories, settings in jobs_list(only, full):
        restore = configure(settings)
        try:
            for dtype in dtypes:
                for packed in (False, True):
                    for memory in memories:
                        recorder.model = f"{name}/{dtype}/{'packed' if packed else 'full'}/{memory}"
                        try:
                            drive(make, getattr(torch, dtype), packed, memory)
                        except Exception as err:  # noqa: BLE001 - garbage outputs: best effort
                            run_errors.append(dict(model=recorder.model, error=describe(err)))
        finally:
            restore()
    if only is None or only == "direct":
        run_errors += direct_kernels(recorder)
    specs = recorder.results()
    return {"compiled": [s for s in specs if s["status"] == "compiled"],
            "failed": [s for s in specs if s["status"] != "compiled"],
            "launched_kernels": launched_kernels(), "run_errors": run_errors,
            "launches": recorder.launches, "jobs": jobs, "arch": ARCH,
            "seconds": round(time.perf_counter() - start, 1)}


def default_jobs() -> int:
    """The CPUs this process may use, at most 8 (each compile holds a few hundred MB)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cpus or 1))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here (default: stdout)")
    parser.add_argument("--arch", type=int, default=90, help="compute capability to compile for (90: sm_90)")
    parser.add_argument("--jobs", type=int, default=default_jobs(), help="concurrent compiles")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds one compile may take")
    parser.add_argument("--only", help="run only the jobs whose name contains this ('direct': the direct launches)")
    parser.add_argument("--full", action="store_true", help="every variant, geometry and tile the CPU tests use, "
                        "in every dtype, float16 included (several times longer)")
    args = parser.parse_args(argv)
    global ARCH  # noqa: PLW0603 - read by the stand-in driver and the ptxas check
    ARCH = args.arch
    work = tempfile.mkdtemp(prefix="revrnn-gpu-compile-")
    # a fresh Triton cache: every specialisation compiles (and ptxas logs it), ~/.triton stays clean
    os.environ["TRITON_CACHE_DIR"] = os.path.join(work, "triton-cache")
    try:
        result = run(work, max(1, args.jobs), args.timeout, args.only, args.full)
    except Exception:  # noqa: BLE001 - report the harness's own failure to the test
        result = {"error": traceback.format_exc()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1)
    else:
        json.dump(result, sys.stdout, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
