"""Build of revrnn: the Python package, plus the extension ``revrnn._C`` compiled from csrc/.

Packages and metadata are in pyproject.toml; this file adds what it cannot express: the
``kernels/`` folder installed as ``revrnn.kernels``, and a ``build_ext`` that drives CMake
(CMakeLists.txt) instead of setuptools' compiler.

Environment variables:
  REVRNN_NO_EXT=1  skip the compiled extension: a pure-Python install.
  REVRNN_CUDA      build ``revrnn._C_cuda`` from csrc/cuda: "1" always, "0" never; unset, when
                   nvcc is found (on PATH, $CUDACXX or /usr/local/cuda/bin). It needs no GPU,
                   no cuBLAS and no torch to build (cuBLAS is loaded at run time).
  CMAKE_ARGS       extra arguments for the CMake configure step (e.g. -DREVRNN_OPENMP=OFF).

If CMake or a C++ compiler is missing, or the build fails, a warning is printed (shown by
``pip install -v``) and the pure-Python package is installed: backend "cpu" then reports
itself unavailable with the reason.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()


class CMakeExtension(Extension):
    """An extension built by CMake's ``target`` (no sources for setuptools to compile); ``cuda``:
    one built with nvcc, as REVRNN_CUDA says."""

    def __init__(self, name: str, target: str, cuda: bool = False) -> None:
        super().__init__(name, sources=[])
        self.target, self.cuda = target, cuda

    def skip_reason(self) -> str | None:
        if os.environ.get("REVRNN_NO_EXT") == "1":
            return "REVRNN_NO_EXT=1"
        if self.cuda:
            switch = os.environ.get("REVRNN_CUDA")
            if switch == "0":
                return "REVRNN_CUDA=0"
            if switch != "1" and nvcc() is None:
                return "nvcc was not found (REVRNN_CUDA=1 and CUDACXX=/path/to/nvcc force the build)"
        return None


def nvcc() -> str | None:
    """The CUDA compiler CMake would find, or None."""
    for path in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if path and os.access(path, os.X_OK):
            return path
    return None


class BuildFailed(Exception):
    pass


class CMakeBuild(build_ext):
    """Builds each wanted CMakeExtension; one that fails is dropped with a warning, never fatal."""

    def build_extensions(self) -> None:
        built = []
        for ext in self.extensions:
            # Remove any copy left by an earlier build (pip builds local projects in the source
            # tree, build/ persists): an extension not built now must not be installed.
            Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
            if ext.skip_reason():
                print(f"revrnn: not building {ext.name}: {ext.skip_reason()}")
                continue
            try:
                self.build_extension(ext)
                built.append(ext)
            except BuildFailed as err:
                print(f"\nWARNING: revrnn: the compiled extension {ext.name} was not built: {err}\n"
                      "Installing the pure-Python package; its backend will report itself "
                      "unavailable. See docs/build.md.\n", file=sys.stderr, flush=True)
        # In place: later steps (copy to the source tree, the wheel's file list) see only what exists.
        self.extensions[:] = built

    def build_extension(self, ext: CMakeExtension) -> None:
        cmake = shutil.which("cmake")
        if cmake is None:
            raise BuildFailed("CMake was not found on PATH")
        out = Path(self.get_ext_fullpath(ext.name)).resolve()
        build_dir = Path(self.build_temp).resolve() / "cmake"
        build_dir.mkdir(parents=True, exist_ok=True)
        # A fresh configure each time: a cache from another interpreter, pybind11 or (isolated,
        # since deleted) build environment would point at stale paths. Objects are still reused.
        (build_dir / "CMakeCache.txt").unlink(missing_ok=True)
        try:  # a build requirement, but absent from --no-build-isolation builds that forgot it
            import pybind11
        except ImportError as err:
            raise BuildFailed(f"pybind11 is not installed ({err})") from err

        configure = [
            cmake, "-S", str(ROOT), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out.parent}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DREVRNN_VERSION={self.distribution.get_version()}",
            f"-DREVRNN_CUDA={'ON' if ext.cuda else 'OFF'}",
            *shlex.split(os.environ.get("CMAKE_ARGS", "")),
        ]
        if shutil.which("ninja"):
            configure += ["-G", "Ninja"]
        jobs = self.parallel or os.cpu_count() or 1
        build = [cmake, "--build", str(build_dir), "--target", ext.target, "-j", str(jobs)]
        for step, cmd in (("configure", configure), ("build", build)):
            print(" ".join(cmd), flush=True)
            try:
                run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            except OSError as err:
                raise BuildFailed(f"could not run CMake ({err})") from err
            print(run.stdout, flush=True)
            if run.returncode:  # quote why: CMake's first error (e.g. no compiler found), else the end
                lines = [line for line in run.stdout.splitlines() if line.strip()]
                first = next((k for k, line in enumerate(lines) if line.startswith("CMake Error")), None)
                why = "\n    ".join(lines[-12:] if first is None else lines[first:first + 12])
                raise BuildFailed(f"the CMake {step} step failed (exit status {run.returncode}):\n    {why}")
        if not out.exists():
            raise BuildFailed(f"CMake did not produce {out.name} in {out.parent}")


# kernels/ (Triton) is installed as revrnn.kernels: there is no top-level module `kernels`.
kernel_packages = ["revrnn.kernels", *(f"revrnn.kernels.{p}" for p in find_packages("kernels"))]

setup(
    packages=find_packages(include=["revrnn", "revrnn.*"]) + kernel_packages,
    package_dir={"revrnn.kernels": "kernels"},
    ext_modules=[CMakeExtension("revrnn._C", "_C"),
                 CMakeExtension("revrnn._C_cuda", "_C_cuda", cuda=True)],
    cmdclass={"build_ext": CMakeBuild},
)
