// CUDA kernels of the LSTM pointwise step: one thread per (batch, unit) element, calling the
// per-element math that the CPU executor runs (revrnn/lstm.h), so CPU tests cover this math.
#include "cuda/lstm.h"

#include "revrnn/lstm.h"

namespace revrnn {
namespace cuda {
namespace {

constexpr int kThreads = 256;

template <typename T>
__global__ void forward_kernel(int64_t B, int64_t H, T* gates, const T* h_prev, const T* c_prev,
                               const uint8_t* mask, T* h, T* c, T* y) {
  const int64_t n = B * H;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x)
    lstm::forward_element(k / H, k % H, H, gates, h_prev, c_prev, mask, h, c, y);
}

template <typename T>
__global__ void backward_kernel(int64_t B, int64_t H, const T* act, const T* c_prev, const T* c,
                                const T* grad_y, const uint8_t* mask, T* dh, T* dc, T* dgates) {
  const int64_t n = B * H;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n;
       k += int64_t(gridDim.x) * blockDim.x)
    lstm::backward_element(k / H, k % H, H, act, c_prev, c, grad_y, mask, dh, dc, dgates);
}

// Grid-stride loops make any grid correct; cap it so huge batches do not ask for >2^31 blocks.
unsigned blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

}  // namespace

template <typename T>
cudaError_t lstm_forward(int64_t B, int64_t H, T* gates, const T* h_prev, const T* c_prev,
                         const uint8_t* mask, T* h, T* c, T* y, cudaStream_t stream) {
  if (B * H == 0) return cudaSuccess;
  forward_kernel<T><<<blocks(B * H), kThreads, 0, stream>>>(B, H, gates, h_prev, c_prev, mask,
                                                           h, c, y);
  return cudaGetLastError();
}

template <typename T>
cudaError_t lstm_backward(int64_t B, int64_t H, const T* act, const T* c_prev, const T* c,
                          const T* grad_y, const uint8_t* mask, T* dh, T* dc, T* dgates,
                          cudaStream_t stream) {
  if (B * H == 0) return cudaSuccess;
  backward_kernel<T><<<blocks(B * H), kThreads, 0, stream>>>(B, H, act, c_prev, c, grad_y, mask,
                                                            dh, dc, dgates);
  return cudaGetLastError();
}

template cudaError_t lstm_forward<float>(int64_t, int64_t, float*, const float*, const float*,
                                         const uint8_t*, float*, float*, float*, cudaStream_t);
template cudaError_t lstm_forward<double>(int64_t, int64_t, double*, const double*,
                                          const double*, const uint8_t*, double*, double*,
                                          double*, cudaStream_t);
template cudaError_t lstm_backward<float>(int64_t, int64_t, const float*, const float*,
                                          const float*, const float*, const uint8_t*, float*,
                                          float*, float*, cudaStream_t);
template cudaError_t lstm_backward<double>(int64_t, int64_t, const double*, const double*,
                                           const double*, const double*, const uint8_t*,
                                           double*, double*, double*, cudaStream_t);

}  // namespace cuda
}  // namespace revrnn
