// The CPU device policy of the executor (revrnn/executor.h): one OpenMP team per chunk, each
// thread owning a slice of the hidden units for the whole chunk; per step it runs the GEMM
// columns and the pointwise pass of its units, single-threaded BLAS, and meets the others at
// a barrier where a step needs every unit. One thread pool, woken once per chunk: a threaded
// BLAS would keep a second pool spinning beside torch's between calls.
#pragma once

#include <algorithm>

#include "cpu/blas.h"
#include "revrnn/common.h"
#include "revrnn/registry.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace revrnn {
namespace cpu {

// Below this many multiply-adds per step a second thread costs more than it saves.
constexpr int64_t kParallelWork = int64_t(1) << 18;
// Slices are multiples of this many units, so that SIMD loops start aligned.
constexpr int64_t kSliceQuantum = 16;

// One row's units [j0, j1), vectorised: the cell's per-element function inlines into this loop,
// and libmvec supplies SIMD exp/tanh (revrnn/common.h). Cloned for AVX2+FMA and for the
// baseline x86-64, picked when the library loads, so one build runs fast where it can.
template <class F>
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
void row(int64_t b, int64_t j0, int64_t j1, bool valid, const F& f) {
  // `valid` as a constant in each loop: a select on it would sink the work it selects into a
  // branch, and a loop with branches does not vectorise
  if (valid) {
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) f(b, j, true);
  } else {
#pragma omp simd
    for (int64_t j = j0; j < j1; ++j) f(b, j, false);
  }
}

struct CpuDevice {
  int threads = 1;
  bool gemms = true;  // gemms_enabled(), read once per chunk

  explicit CpuDevice(const Where& w) : threads(w.threads), gemms(gemms_enabled().load()) {}
  void finish(const char*) const {}  // nothing deferred: errors throw where they happen

  // Runs body(Slice) on every thread of a team sized for `work` multiply-adds per step, each
  // with a slice of [0, H) in multiples of `quantum` (units: kSliceQuantum; batch rows: 1).
  template <class Body>
  void parallel(int64_t H, int64_t work, const Body& body, int64_t quantum = kSliceQuantum) {
    int64_t team = work >= kParallelWork ? threads : 1;
    const int64_t most = (H + quantum - 1) / quantum;
    team = team < most ? team : (most > 0 ? most : 1);
#ifdef _OPENMP
    if (team > 1) {
#pragma omp parallel num_threads(int(team))
      {
        const int64_t k = omp_get_thread_num(), n = omp_get_num_threads();
        const int64_t per = ((H + n - 1) / n + quantum - 1) / quantum * quantum;
        const int64_t j0 = k * per < H ? k * per : H, j1 = j0 + per < H ? j0 + per : H;
        const OneThread one;
        body(Slice{j0, j1});
      }
      return;
    }
#endif
    body(Slice{0, H});
  }

  // Every thread of the team has reached this point (orphaned: binds to parallel()'s team).
  void barrier() {
#ifdef _OPENMP
#pragma omp barrier
#endif
  }

  template <typename T>
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda,
            const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (gemms) {
      cpu::gemm<T>(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    } else if (beta == T(0)) {
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, T(0));
    }
  }

  template <class F>
  void pointwise(int64_t B, Slice u, const uint8_t* mask, const F& f) {
    for (int64_t b = 0; b < B; ++b) row(b, u.j0, u.j1, mask == nullptr || mask[b] != 0, f);
  }
};

}  // namespace cpu
}  // namespace revrnn
