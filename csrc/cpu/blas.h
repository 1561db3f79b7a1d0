// The BLAS the CPU executor calls, loaded at run time from a shared library (dlopen), so the
// build needs no BLAS and the extension links against none: Python hands in the library's path
// and its symbols' prefix (revrnn/backends/cpu.py: by default the MKL inside torch's CPU build,
// else the OpenBLAS of the scipy-openblas32 package, whose symbols are scipy_cblas_sgemm, ...).
#pragma once

#include <stdint.h>

#include <string>

namespace revrnn {
namespace cpu {

// Loads `path` and resolves `<prefix>cblas_sgemm` and `<prefix>cblas_dgemm`, or where it has
// none the Fortran `<prefix>sgemm_` and `<prefix>dgemm_`; sets the BLAS to one thread where it
// has `<prefix>openblas_set_num_threads`, and checks a small product per dtype and transpose
// pair. Returns "" on success, else why it failed (the library loaded before stays in use). A
// second library replaces the first for later calls.
std::string load_blas(const std::string& path, const std::string& prefix);
bool blas_loaded();

// While alive, the BLAS runs on the calling thread only (where the library has a per-thread
// setting: MKL's; OpenBLAS is set to one thread when it is loaded).
struct OneThread {
  OneThread();
  ~OneThread();
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;

 private:
  int old;  // the thread's setting before, or -1 where the library has none
};

// Row-major C = alpha op(A) op(B) + beta C, op = transpose where asked; sizes below 2^31
// (the glue checks every operand before a chunk runs: revrnn/backends/compiled.py).
template <typename T>
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
          int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

// The same in column-major order, as cuBLAS takes it (for the tests of revrnn/colmajor.h).
template <typename T>
void gemm_colmajor(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, T alpha, const T* A,
                   int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc);

}  // namespace cpu
}  // namespace revrnn
