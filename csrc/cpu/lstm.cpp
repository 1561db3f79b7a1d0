// CPU executor: loops over (batch, unit) and calls the per-element math shared with CUDA.
#include "cpu/lstm.h"

#include "revrnn/lstm.h"

namespace revrnn {
namespace cpu {

// Below this many elements a step is a few microseconds of work and starting threads costs more.
constexpr int64_t kParallelMin = int64_t(1) << 15;

template <typename T>
void lstm_forward(int64_t B, int64_t H, T* gates, const T* h_prev, const T* c_prev,
                  const uint8_t* mask, T* h, T* c, T* y) {
#pragma omp parallel for if (B * H >= kParallelMin)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j)
      lstm::forward_element(b, j, H, gates, h_prev, c_prev, mask, h, c, y);
}

template <typename T>
void lstm_backward(int64_t B, int64_t H, const T* act, const T* c_prev, const T* c,
                   const T* grad_y, const uint8_t* mask, T* dh, T* dc, T* dgates) {
#pragma omp parallel for if (B * H >= kParallelMin)
  for (int64_t b = 0; b < B; ++b)
    for (int64_t j = 0; j < H; ++j)
      lstm::backward_element(b, j, H, act, c_prev, c, grad_y, mask, dh, dc, dgates);
}

template void lstm_forward<float>(int64_t, int64_t, float*, const float*, const float*,
                                  const uint8_t*, float*, float*, float*);
template void lstm_forward<double>(int64_t, int64_t, double*, const double*, const double*,
                                   const uint8_t*, double*, double*, double*);
template void lstm_backward<float>(int64_t, int64_t, const float*, const float*, const float*,
                                   const float*, const uint8_t*, float*, float*, float*);
template void lstm_backward<double>(int64_t, int64_t, const double*, const double*,
                                    const double*, const double*, const uint8_t*, double*,
                                    double*, double*);

}  // namespace cpu
}  // namespace revrnn
