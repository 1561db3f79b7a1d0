// A row-major GEMM as the column-major call that computes it, for column-major libraries
// (cuBLAS, csrc/cuda/device.cuh). A row-major matrix read column-major is its transpose, and
// row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: the call swaps the operands
// and their sizes and keeps each operand's transpose flag and leading dimension; C is unchanged.
// The CPU module runs this mapping through its BLAS's column-major interface in the tests
// (revrnn._C.gemm_colmajor), since no GPU runs in CI.
#pragma once

#include <stdint.h>

namespace revrnn {

template <typename T>
struct ColMajorGemm {
  bool trans_a, trans_b;
  int64_t m, n, k;
  const T* A;
  int64_t lda;
  const T* B;
  int64_t ldb;
};

template <typename T>
inline ColMajorGemm<T> colmajor(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const T* A, int64_t lda, const T* B,
                                int64_t ldb) {
  return {tb, ta, N, M, K, B, ldb, A, lda};
}

}  // namespace revrnn
