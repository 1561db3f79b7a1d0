"""The build: CUDA sources compile for sm_80/sm_90, the package imports, the extension loads,
and the packaging puts kernels/ at revrnn.kernels and survives a missing compiler."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import revrnn

ROOT = Path(__file__).resolve().parent.parent
CUDA_SOURCES = sorted((ROOT / "csrc").rglob("*.cu"))


def nvcc() -> str:
    path = shutil.which("nvcc")
    if path is None:
        if os.environ.get("REVRNN_REQUIRE_NVCC") == "1":
            pytest.fail("REVRNN_REQUIRE_NVCC=1 but nvcc is not on PATH")
        pytest.skip("nvcc is not on PATH (set REVRNN_REQUIRE_NVCC=1 to make this a failure)")
    return path


def test_there_are_cuda_sources():
    assert CUDA_SOURCES, "csrc/ has no .cu file"


@pytest.mark.parametrize("source", CUDA_SOURCES, ids=[str(p.relative_to(ROOT)) for p in CUDA_SOURCES])
def test_cuda_source_compiles_for_sm80_and_sm90(source, tmp_path):
    """Every CUDA source compiles for both architectures, warnings as errors."""
    cmd = [nvcc(), "-c", "-std=c++17", "-Werror", "all-warnings", "-gencode", "arch=compute_80,code=sm_80",
           "-gencode", "arch=compute_90,code=sm_90", "-I", str(ROOT / "csrc" / "include"),
           "-I", str(ROOT / "csrc"), str(source), "-o", str(tmp_path / "out.o")]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 0, f"{' '.join(cmd)}\n{run.stdout}{run.stderr}"
    assert (tmp_path / "out.o").stat().st_size > 0


def test_import_in_a_fresh_interpreter():
    code = "import revrnn; print(sorted(revrnn.available_backends()))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    assert "'cpu'" in run.stdout and "'reference'" in run.stdout


def test_cpu_backend_available_iff_extension_built():
    reason = revrnn.available_backends()["cpu"]
    if importlib.util.find_spec("revrnn._C") is None:
        assert os.environ.get("REVRNN_REQUIRE_EXT") != "1", f"REVRNN_REQUIRE_EXT=1 but: {reason}"
        assert reason is not None and reason.startswith("the compiled extension revrnn._C is not built")
    else:
        from revrnn import _C
        assert reason is None
        assert _C.version() == revrnn.__version__


def test_missing_blas_makes_the_backend_unavailable_with_the_reason():
    """Without its BLAS the executor reports why, ``auto`` runs the reference instead, and
    ``backend="cpu"`` raises BackendUnavailable naming the library."""
    if importlib.util.find_spec("revrnn._C") is None:
        pytest.skip("the extension is not built (test_cpu_backend_available_iff_extension_built says why)")
    code = """
import torch, revrnn
from revrnn.backends import resolve
from revrnn.cells import LSTMCell
print(revrnn.available_backends()["cpu"])
print(resolve("auto", LSTMCell(3, 4), torch.device("cpu")).name)
try:
    revrnn.nn.LSTM(3, 4, backend="cpu")(torch.randn(2, 1, 3))
except revrnn.BackendUnavailable as err:
    print(type(err).__name__)
"""
    env = {**os.environ, "REVRNN_BLAS": "/nonexistent/libblas.so"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    reason, auto, raised = run.stdout.strip().splitlines()
    assert reason.startswith("its BLAS did not load: cannot load /nonexistent/libblas.so")
    assert auto == "reference" and raised == "BackendUnavailable"


def build_wheel(tmp_path: Path, **env: str) -> tuple[list[str], str]:
    """Build a wheel of a copy of the project without build isolation; its file names and log."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"  # only what the build reads: no build/, .venv or stale *.so
    src.mkdir()
    for name in ("setup.py", "pyproject.toml", "CMakeLists.txt", "MANIFEST.in"):
        shutil.copy2(ROOT / name, src)
    for name in ("csrc", "kernels", "revrnn"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    cmd = [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "--no-build-isolation",
           str(src), "-w", str(tmp_path / "dist")]
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    assert run.returncode == 0, run.stdout + run.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    # Files of the wheel relative to site-packages (drop setuptools' .data/purelib prefix).
    names = [n.split("/purelib/", 1)[-1] for n in zipfile.ZipFile(wheel).namelist()]
    return names, run.stdout + run.stderr


def test_wheel_without_a_compiler_is_pure_python_with_a_warning(tmp_path):
    names, log = build_wheel(tmp_path, CMAKE_ARGS="-DCMAKE_CXX_COMPILER=/nonexistent/c++")
    assert "WARNING: revrnn: the compiled extension revrnn._C was not built" in log
    assert "/nonexistent/c++" in log  # the warning quotes CMake's reason
    assert not any("_C." in n for n in names)
    assert "revrnn/kernels/__init__.py" in names
    assert not [n for n in names if n.split("/")[0] in ("kernels", "tests", "csrc")]


def test_no_ext_skips_the_build(tmp_path):
    names, log = build_wheel(tmp_path, REVRNN_NO_EXT="1")
    assert "-DREVRNN_VERSION" not in log and not any("_C." in n for n in names)  # CMake never ran
    assert "revrnn/backends/executor.py" in names
