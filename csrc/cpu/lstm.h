// CPU executor of the LSTM pointwise step: plain pointers and sizes, no framework types.
#pragma once

#include <stdint.h>

namespace revrnn {
namespace cpu {

// One step for a batch of B rows and H units; see revrnn/lstm.h for the arguments' meaning.
template <typename T>
void lstm_forward(int64_t B, int64_t H, T* gates, const T* h_prev, const T* c_prev,
                  const uint8_t* mask, T* h, T* c, T* y);

template <typename T>
void lstm_backward(int64_t B, int64_t H, const T* act, const T* c_prev, const T* c,
                   const T* grad_y, const uint8_t* mask, T* dh, T* dc, T* dgates);

}  // namespace cpu
}  // namespace revrnn
