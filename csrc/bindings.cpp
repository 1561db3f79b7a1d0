// pybind11 module revrnn._C: thin bindings of the CPU executor (see bindings.h for conventions;
// the chunk calls it shares with revrnn._C_cuda are in chunks.h).
#include <optional>
#include <tuple>

#include "chunks.h"
#include "cpu/blas.h"
#include "cpu/executor.h"
#include "cpu/reversible.h"
#include "revrnn/colmajor.h"
#include "revrnn/launch.h"

#ifndef REVRNN_VERSION
#error "REVRNN_VERSION must be defined by the build (CMakeLists.txt)"
#endif

namespace py = pybind11;
using revrnn::bindings::Addresses;
using revrnn::bindings::DType;
using revrnn::bindings::pointer;
using std::uintptr_t;

namespace {

// The per-operation integer core: one multiply or divide of every element through the buffer.
void run_elements(const char* fn, bool forward, int64_t rows, int64_t G, uintptr_t h, uintptr_t n, uintptr_t q,
                  uintptr_t active, uintptr_t out, const Addresses& buffer, int64_t depth, int64_t spill_at,
                  int64_t op) {
  revrnn::bindings::check_sizes(fn, rows, G);
  // the caller accounts the information of a single operation itself
  const revrnn::fixed::Buffer buf = revrnn::bindings::buffer_args(fn, buffer, depth, rows * G, spill_at, false, !forward, true);
  const int64_t* hp = pointer<const int64_t>(fn, "h", h);
  const int64_t* np = pointer<const int64_t>(fn, "n", n);
  const int64_t* qp = pointer<const int64_t>(fn, "q", q, true);
  const uint8_t* ap = pointer<const uint8_t>(fn, "active", active, true);
  int64_t* op_out = pointer<int64_t>(fn, "out", out);
  py::gil_scoped_release release;
  revrnn::cpu::exact_elements(forward, rows, G, hp, np, qp, ap, op_out, buf, op);
}

// A row-major GEMM, C = op(A) op(B), through the column-major call the CUDA device makes
// (revrnn/colmajor.h), on the CPU's BLAS.
template <typename T>
void run_colmajor(bool ta, bool tb, int64_t M, int64_t N, int64_t K, uintptr_t A, int64_t lda, uintptr_t B,
                  int64_t ldb, uintptr_t C, int64_t ldc) {
  const char* fn = "gemm_colmajor";
  revrnn::bindings::check_sizes(fn, M, N);
  revrnn::bindings::ready(revrnn::cpu::registry(), fn);
  const auto g = revrnn::colmajor(ta, tb, M, N, K, pointer<const T>(fn, "A", A), lda, pointer<const T>(fn, "B", B), ldb);
  py::gil_scoped_release release;
  revrnn::cpu::gemm_colmajor<T>(g.trans_a, g.trans_b, g.m, g.n, g.k, T(1), g.A, g.lda, g.B, g.ldb, T(0),
                                pointer<T>(fn, "C", C), ldc);
}

// Every thread of the CUDA pointwise launch over n elements, run on the host through the kernels'
// own loop (revrnn/launch.h): (blocks, fewest and most visits of an element).
std::tuple<unsigned, int, int> launch_cover(int64_t n) {
  if (n < 0) throw std::invalid_argument("launch_cover: n must be >= 0, got " + std::to_string(n));
  const unsigned grid = revrnn::launch::blocks(n);
  std::vector<uint8_t> visits(size_t(n), 0);
  py::gil_scoped_release release;
  for (int64_t block = 0; block < grid; ++block)
    for (int64_t thread = 0; thread < revrnn::launch::kThreads; ++thread)
      revrnn::launch::for_each(n, block, thread, grid, [&](int64_t k) {
        if (visits[size_t(k)] < 255) ++visits[size_t(k)];
      });
  int lo = n ? 255 : 0, hi = 0;
  for (uint8_t v : visits) {
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
  return {grid, lo, hi};
}

}  // namespace
PYBIND11_MODULE(_C, m) {
  m.doc() = "revrnn's compiled CPU executor (framework-free: raw pointers, sizes, dtype flags)";
  m.def("version", [] { return std::string(REVRNN_VERSION); },
        "Version of revrnn this extension was built from.");
  revrnn::bindings::add_dtype(m);
  m.def("launch_cover", &launch_cover, py::arg("n"),
        "The CUDA pointwise launch's geometry over n elements run on the host: (blocks, fewest and\n"
        "most visits of an element); 1 and 1 when every element is visited exactly once.");

  m.def(
      "gemm_colmajor",
      [](DType dtype, bool ta, bool tb, int64_t M, int64_t N, int64_t K, uintptr_t A, int64_t lda, uintptr_t B,
         int64_t ldb, uintptr_t C, int64_t ldc) {
        (dtype == DType::float32 ? run_colmajor<float> : run_colmajor<double>)(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
      },
      py::arg("dtype"), py::arg("ta"), py::arg("tb"), py::arg("M"), py::arg("N"), py::arg("K"), py::arg("A"),
      py::arg("lda"), py::arg("B"), py::arg("ldb"), py::arg("C"), py::arg("ldc"),
      "Row-major C = op(A) op(B) through the column-major call the CUDA device makes\n"
      "(revrnn/colmajor.h), run on the loaded BLAS.");
  m.def("load_blas", &revrnn::cpu::load_blas, py::arg("path"), py::arg("prefix"),
        "Load the BLAS shared library at `path` (symbols `<prefix>cblas_sgemm`, ..., or the Fortran\n"
        "`<prefix>sgemm_`, ...) and check a small product; returns '' or why it failed (the library\n"
        "loaded before stays in use).");
  revrnn::bindings::def_chunks<int>(m, revrnn::cpu::registry(), "threads", [](const char* fn, const int& threads) {
    if (threads < 1) throw std::invalid_argument(std::string(fn) + ": threads must be >= 1, got " + std::to_string(threads));
    revrnn::Where w;
    w.threads = threads;
    return w;
  });
  for (const bool forward : {true, false}) {
    const char* name = forward ? "rev_multiply" : "rev_divide";
    m.def(
        name,
        [name, forward](int64_t rows, int64_t G, uintptr_t h, uintptr_t n, uintptr_t q, uintptr_t active,
                        uintptr_t out, const Addresses& buffer, int64_t depth, int64_t spill_at, int64_t op) {
          run_elements(name, forward, rows, G, h, n, q, active, out, buffer, depth, spill_at, op);
        },
        py::arg("rows"), py::arg("G"), py::arg("h"), py::arg("n"), py::arg("q"), py::arg("active"), py::arg("out"),
        py::arg("buffer"), py::arg("depth"), py::arg("spill_at"), py::arg("op"),
        forward ? "One exact multiply of every element through the buffer (revrnn/fixed.h: multiply)."
                : "One exact divide of every element through the buffer (revrnn/fixed.h: divide).");
  }

}
