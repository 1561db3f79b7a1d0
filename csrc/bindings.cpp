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

// The g-LSTM's sparse chunk: addresses [xp, w_hh, mask, gate, offsets, units, h, c, act, prev,
// y (forward) or grad_y (backward), dh, dc, dxp, dw_hh, dgate, w, rec, dw]; 0 where a pass does not
// use one (mask and dw_hh may always be 0).
template <typename T>
void run_glstm_sparse(bool backward, int64_t K, int64_t B, int64_t H, const Addresses& a) {
  const char* fn = backward ? "glstm_sparse_backward" : "glstm_sparse_forward";
  revrnn::bindings::check_sizes(fn, B, H);
  if (K < 0) throw std::invalid_argument(std::string(fn) + ": K must be >= 0, got " + std::to_string(K));
  if (a.size() != 19)
    throw std::invalid_argument(std::string(fn) + ": argument 'addresses' must list 19 addresses, got " +
                                std::to_string(a.size()));
  if (B > INT_MAX || 4 * H > INT_MAX)
    throw std::invalid_argument(std::string(fn) + ": B or 4H exceeds the BLAS's 32-bit sizes");
  revrnn::bindings::ready(revrnn::cpu::registry(), fn);
  const bool fwd = !backward;
  revrnn::SparseChunk<T> c{K, B, H, pointer<const T>(fn, "xp", a[0], backward), pointer<const T>(fn, "w_hh", a[1]),
                           pointer<const uint8_t>(fn, "mask", a[2], true), pointer<const T>(fn, "gate", a[3]),
                           pointer<const int64_t>(fn, "offsets", a[4]), pointer<const int64_t>(fn, "units", a[5], true),
                           pointer<T>(fn, "h", a[6]), pointer<T>(fn, "c", a[7]), pointer<T>(fn, "act", a[8], true),
                           pointer<T>(fn, "prev", a[9], true), fwd ? pointer<T>(fn, "y", a[10]) : nullptr,
                           backward ? pointer<const T>(fn, "grad_y", a[10]) : nullptr,
                           pointer<T>(fn, "dh", a[11], fwd), pointer<T>(fn, "dc", a[12], fwd),
                           pointer<T>(fn, "dxp", a[13], fwd), pointer<T>(fn, "dw_hh", a[14], true),
                           pointer<T>(fn, "dgate", a[15], fwd), pointer<T>(fn, "w", a[16], true),
                           pointer<T>(fn, "rec", a[17], true), pointer<T>(fn, "dw", a[18], true)};
  py::gil_scoped_release release;
  revrnn::cpu::glstm_sparse(backward, c);
}

// The NRU's chunk: addresses [xp, w_hh, w_heads, b_heads, mask, s, y (forward) or grad_y
// (backward), g, dxp, dheads, rec, heads, work]; 0 where a pass does not use one (b_heads and
// mask may always be 0).
template <typename T>
void run_nru(bool backward, int threads, int64_t K, int64_t B, int64_t H, int64_t M, int64_t k, bool relu,
             std::optional<double> clamp, double eps, bool keep, const Addresses& a) {
  const char* fn = backward ? "nru_backward" : "nru_forward";
  revrnn::bindings::check_sizes(fn, B, H);
  int64_t r = 0;
  while ((r + 1) * (r + 1) <= k * M) ++r;
  if (K < 0 || threads < 1 || M < 1 || k < 1 || r * r != k * M)
    throw std::invalid_argument(std::string(fn) + ": need K >= 0, threads >= 1, M >= 1, k >= 1 and k*M a square, got K=" +
                                std::to_string(K) + ", threads=" + std::to_string(threads) + ", M=" +
                                std::to_string(M) + ", k=" + std::to_string(k));
  if (a.size() != 13)
    throw std::invalid_argument(std::string(fn) + ": argument 'addresses' must list 13 addresses, got " +
                                std::to_string(a.size()));
  if (B > INT_MAX || H + M > INT_MAX || 2 * k + 4 * r > INT_MAX)
    throw std::invalid_argument(std::string(fn) + ": B, H + M or 2k + 4r exceeds the BLAS's 32-bit sizes");
  revrnn::bindings::ready(revrnn::cpu::registry(), fn);
  const bool fwd = !backward;
  revrnn::NruChunk<T> c{K, B, H, M, k, r, relu, clamp.has_value(), T(clamp.value_or(0.0)), T(eps), keep && fwd,
                        pointer<const T>(fn, "xp", a[0], backward), pointer<const T>(fn, "w_hh", a[1]),
                        pointer<const T>(fn, "w_heads", a[2]), pointer<const T>(fn, "b_heads", a[3], true),
                        pointer<const uint8_t>(fn, "mask", a[4], true), pointer<T>(fn, "s", a[5]),
                        fwd ? pointer<T>(fn, "y", a[6]) : nullptr, backward ? pointer<const T>(fn, "grad_y", a[6]) : nullptr,
                        pointer<T>(fn, "g", a[7], fwd), pointer<T>(fn, "dxp", a[8], fwd),
                        pointer<T>(fn, "dheads", a[9], fwd), pointer<T>(fn, "rec", a[10]), pointer<T>(fn, "heads", a[11]),
                        pointer<T>(fn, "work", a[12])};
  py::gil_scoped_release release;
  revrnn::cpu::nru(backward, threads, c);
}

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
        "Load the BLAS shared library at `path` (symbols `<prefix>cblas_sgemm`, ...); returns '' or\n"
        "why it failed.");
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

  m.def("nru_work_size", [](int64_t k, int64_t M) { return revrnn::nru::work_size(k, M); }, py::arg("k"),
        py::arg("M"), "Scratch elements per row of an NRU chunk with k heads of memory size M.");
  for (const bool backward : {false, true}) {
    m.def(
        backward ? "nru_backward" : "nru_forward",
        [backward](DType dtype, int threads, int64_t K, int64_t B, int64_t H, int64_t M, int64_t k, bool relu,
                   std::optional<double> clamp, double eps, bool keep, const Addresses& addresses) {
          if (dtype == DType::float32)
            run_nru<float>(backward, threads, K, B, H, M, k, relu, clamp, eps, keep, addresses);
          else
            run_nru<double>(backward, threads, K, B, H, M, k, relu, clamp, eps, keep, addresses);
        },
        py::arg("dtype"), py::arg("threads"), py::arg("K"), py::arg("B"), py::arg("H"), py::arg("M"), py::arg("k"),
        py::arg("relu"), py::arg("clamp"), py::arg("eps"), py::arg("keep"), py::arg("addresses"),
        "The NRU's chunk (revrnn/nru.h: NruChunk); addresses: 13, in the order of run_nru\n"
        "(csrc/bindings.cpp); clamp: the memory clamp or None.");
  }
  for (const bool backward : {false, true}) {
    m.def(
        backward ? "glstm_sparse_backward" : "glstm_sparse_forward",
        [backward](DType dtype, int64_t K, int64_t B, int64_t H, const Addresses& addresses) {
          if (dtype == DType::float32)
            run_glstm_sparse<float>(backward, K, B, H, addresses);
          else
            run_glstm_sparse<double>(backward, K, B, H, addresses);
        },
        py::arg("dtype"), py::arg("K"), py::arg("B"), py::arg("H"), py::arg("addresses"),
        "The g-LSTM's sparse chunk (revrnn/glstm_sparse.h); addresses: 19, in the order of\n"
        "run_glstm_sparse (csrc/bindings.cpp).");
  }
}
