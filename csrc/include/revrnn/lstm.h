// LSTM pointwise math, one element (batch row b, unit j) at a time, shared verbatim by the CPU
// executor (csrc/cpu/lstm.cpp) and the CUDA kernels (csrc/cuda/lstm.cu).
//
// Layout (torch.nn.LSTM): gates (B, 4H) row-major with blocks i, f, g, o; states (B, H);
// mask (B) bytes, 0 = finished sequence, or nullptr for "all valid".
// The recurrent GEMM (gates = x W_ih^T + b + h W_hh^T) is done by the caller.
#pragma once

#include <stdint.h>

#include "revrnn/common.h"

namespace revrnn {
namespace lstm {

// Forward of one element. On entry gates holds the pre-activations; on exit the activations
// (i, f, g, o), which are what the backward needs. Masked rows keep the state and output 0.
template <typename T>
REVRNN_HD void forward_element(int64_t b, int64_t j, int64_t H, T* gates, const T* h_prev,
                               const T* c_prev, const uint8_t* mask, T* h, T* c, T* y) {
  T* g4 = gates + b * 4 * H + j;
  const int64_t k = b * H + j;
  const T i = sigmoid(g4[0]), f = sigmoid(g4[H]), g = tanh_(g4[2 * H]), o = sigmoid(g4[3 * H]);
  g4[0] = i;
  g4[H] = f;
  g4[2 * H] = g;
  g4[3 * H] = o;
  if (mask && !mask[b]) {
    h[k] = h_prev[k];
    c[k] = c_prev[k];
    y[k] = T(0);
    return;
  }
  const T cn = f * c_prev[k] + i * g;
  const T hn = o * tanh_(cn);
  c[k] = cn;
  h[k] = hn;
  y[k] = hn;
}

// Backward of one element. act holds the activations written by forward_element, c the cell
// state after the step, grad_y the gradient of the step's output. dh and dc hold the gradients
// of the state after the step on entry; on exit dc is the gradient of c_prev and dh the part of
// the gradient of h_prev that does not flow through the gates (the caller adds dgates @ W_hh).
// dgates receives the gradient of the gate pre-activations (0 on masked rows).
template <typename T>
REVRNN_HD void backward_element(int64_t b, int64_t j, int64_t H, const T* act, const T* c_prev,
                                const T* c, const T* grad_y, const uint8_t* mask, T* dh, T* dc,
                                T* dgates) {
  T* d4 = dgates + b * 4 * H + j;
  const int64_t k = b * H + j;
  if (mask && !mask[b]) {  // the state passed through unchanged: so do its gradients
    d4[0] = d4[H] = d4[2 * H] = d4[3 * H] = T(0);
    return;
  }
  const T* a4 = act + b * 4 * H + j;
  const T i = a4[0], f = a4[H], g = a4[2 * H], o = a4[3 * H];
  const T tc = tanh_(c[k]);
  const T dhn = dh[k] + grad_y[k];
  const T dcn = dc[k] + dhn * o * (T(1) - tc * tc);
  d4[0] = dcn * g * i * (T(1) - i);
  d4[H] = dcn * c_prev[k] * f * (T(1) - f);
  d4[2 * H] = dcn * i * (T(1) - g * g);
  d4[3 * H] = dhn * tc * o * (T(1) - o);
  dc[k] = dcn * f;
  dh[k] = T(0);
}

}  // namespace lstm
}  // namespace revrnn
