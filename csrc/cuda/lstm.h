// CUDA launchers of the LSTM pointwise step: raw device pointers, sizes and a stream.
// They enqueue one kernel on `stream` and never synchronise the host.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

namespace revrnn {
namespace cuda {

// Same arguments as revrnn::cpu::lstm_forward / lstm_backward, on device memory.
template <typename T>
cudaError_t lstm_forward(int64_t B, int64_t H, T* gates, const T* h_prev, const T* c_prev,
                         const uint8_t* mask, T* h, T* c, T* y, cudaStream_t stream);

template <typename T>
cudaError_t lstm_backward(int64_t B, int64_t H, const T* act, const T* c_prev, const T* c,
                          const T* grad_y, const uint8_t* mask, T* dh, T* dc, T* dgates,
                          cudaStream_t stream);

}  // namespace cuda
}  // namespace revrnn
