// The CUDA half of the executor's device policy (revrnn/executor.h): the pointwise pass as one
// kernel launch over (row, unit) in the geometry of revrnn/launch.h (checked on the CPU), calling
// the same per-element functions as the CPU.
// The GEMM half (cuBLAS) comes with the CUDA executor; until then the launchers run one step.
#pragma once

#include <cuda_runtime.h>

#include "revrnn/common.h"
#include "revrnn/launch.h"

namespace revrnn {
namespace cuda {

template <class F>
__global__ void pointwise_kernel(int64_t B, int64_t H, const uint8_t* mask, F f) {
  launch::for_each(B * H, blockIdx.x, threadIdx.x, gridDim.x, [&](int64_t k) {
    const int64_t b = k / H;
    f(b, k % H, mask == nullptr || mask[b] != 0);
  });
}

struct CudaDevice {
  cudaStream_t stream = nullptr;

  template <class F>
  cudaError_t pointwise(int64_t B, int64_t H, const uint8_t* mask, const F& f) {
    if (B * H == 0) return cudaSuccess;
    pointwise_kernel<<<launch::blocks(B * H), launch::kThreads, 0, stream>>>(B, H, mask, f);
    return cudaGetLastError();
  }
};

}  // namespace cuda
}  // namespace revrnn
