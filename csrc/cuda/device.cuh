// The CUDA device policy of the executor's loops (revrnn/executor.h, revrnn/reversible.h): the
// host thread is the whole team (one slice: every unit, or every batch row), each GEMM is a cuBLAS
// call and each pointwise pass one kernel launch over (row, unit) in the geometry of
// revrnn/launch.h, calling the same per-element functions as the CPU. Everything is enqueued on
// the caller's stream, in order, so a barrier is nothing, and nothing waits for the GPU: the
// first failure is recorded, later work skipped, and finish() reports it after the chunk.
#pragma once

#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "cuda/cublas.h"
#include "revrnn/colmajor.h"
#include "revrnn/common.h"
#include "revrnn/launch.h"
#include "revrnn/registry.h"

namespace revrnn {
namespace cuda {

template <class F>
__global__ void pointwise_kernel(int64_t B, Slice u, const uint8_t* mask, F f) {
  const int64_t n = u.size();
  launch::for_each(B * n, blockIdx.x, threadIdx.x, gridDim.x, [&](int64_t k) {
    const int64_t b = k / n;
    f(b, u.j0 + k % n, mask == nullptr || mask[b] != 0);
  });
}

class CudaDevice {
 public:
  // Makes w.device current for the chunk (the caller's current device is restored after it:
  // the runtime's current device is the thread's, which torch reads too).
  explicit CudaDevice(const Where& w) : stream_(static_cast<cudaStream_t>(w.stream)), gemms_(gemms_enabled().load()) {
    err_ = cudaGetDevice(&previous_);
    if (err_ == cudaSuccess && previous_ != w.device) err_ = cudaSetDevice(w.device);
    if (err_ == cudaSuccess) status_ = cublas::prepare(w.device, w.stream, w.workspace, w.workspace_bytes, &blas_);
  }
  ~CudaDevice() {
    int now = previous_;
    if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
  }
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  template <class Body>
  void parallel(int64_t n, int64_t /*work*/, const Body& body, int64_t /*quantum*/ = 1) {
    body(Slice{0, n});
  }

  void barrier() {}  // stream order

  // Row-major, as the CPU's (csrc/cpu/device.h), through the column-major call (revrnn/colmajor.h).
  template <typename T>
  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
            int64_t ldb, T beta, T* C, int64_t ldc) {
    if (failed() || M <= 0 || N <= 0) return;
    if (!gemms_) {  // the kernel benchmark (gemms_enabled): zeros where the GEMM would overwrite C
      if (beta == T(0)) err_ = cudaMemset2DAsync(C, ldc * sizeof(T), 0, N * sizeof(T), M, stream_);
      return;
    }
    const ColMajorGemm<T> g = colmajor(ta, tb, M, N, K, A, lda, B, ldb);
    status_ = cublas::gemm<T>(blas_, g.trans_a, g.trans_b, int(g.m), int(g.n), int(g.k), alpha, g.A, int(g.lda), g.B,
                              int(g.ldb), beta, C, int(ldc));
  }

  template <class F>
  void pointwise(int64_t B, Slice u, const uint8_t* mask, const F& f) {
    const int64_t n = B * u.size();
    if (failed() || n <= 0) return;
    pointwise_kernel<<<launch::blocks(n), launch::kThreads, 0, stream_>>>(B, u, mask, f);
    err_ = cudaGetLastError();
  }

  bool failed() const { return err_ != cudaSuccess || status_ != 0; }

  // Throws what failed first, naming the call `fn`.
  void finish(const char* fn) const {
    if (err_ != cudaSuccess) throw std::runtime_error(std::string(fn) + ": " + cudaGetErrorString(err_));
    if (status_ != 0) throw std::runtime_error(std::string(fn) + ": cuBLAS failed: " + cublas::status_name(status_));
  }

 private:
  cudaStream_t stream_;
  bool gemms_;
  int previous_ = 0;
  void* blas_ = nullptr;
  cudaError_t err_ = cudaSuccess;
  int status_ = 0;
};

}  // namespace cuda
}  // namespace revrnn
