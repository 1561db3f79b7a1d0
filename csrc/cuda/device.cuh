// The CUDA half of the executor's device policy (revrnn/executor.h): the pointwise pass as one
// kernel launch, one thread per (row, unit), calling the same per-element functions as the CPU.
// The GEMM half (cuBLAS) comes with the CUDA executor; until then the launchers run one step.
#pragma once

#include <cuda_runtime.h>

#include "revrnn/common.h"

namespace revrnn {
namespace cuda {

constexpr int kThreads = 256;

template <class F>
__global__ void pointwise_kernel(int64_t B, int64_t H, const uint8_t* mask, F f) {
  const int64_t n = B * H;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = k / H;
    f(b, k % H, mask == nullptr || mask[b] != 0);
  }
}

struct CudaDevice {
  cudaStream_t stream = nullptr;

  // Grid-stride loops make any grid correct; cap it so huge batches do not ask for >2^31 blocks.
  static unsigned blocks(int64_t n) {
    const int64_t b = (n + kThreads - 1) / kThreads;
    return unsigned(b < 65535 ? (b > 0 ? b : 1) : 65535);
  }

  template <class F>
  cudaError_t pointwise(int64_t B, int64_t H, const uint8_t* mask, const F& f) {
    if (B * H == 0) return cudaSuccess;
    pointwise_kernel<<<blocks(B * H), kThreads, 0, stream>>>(B, H, mask, f);
    return cudaGetLastError();
  }
};

}  // namespace cuda
}  // namespace revrnn
