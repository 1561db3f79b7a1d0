// Elman RNN pointwise math (torch.nn.RNN), one element (row b, unit j), shared by the CPU executor
// and the CUDA kernels: h' = phi(xp + rec), phi = tanh or ReLU (kRelu), both biases in xp. Nothing
// is kept per step: phi' follows from h' itself, the state after the step.
#pragma once

#include "revrnn/step.h"

namespace revrnn {

template <bool kRelu>
struct Elman {
  static constexpr int kStates = 1;
  static constexpr int kPhases = 1;
  static constexpr int kGates = 1;
  static constexpr int kXpGates = kGates;
  static constexpr int kActs = 0;
  static constexpr bool kRecIsXp = true;

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const T pre = s.xp[k] + s.rec[k];
    const T h = kRelu ? (pre > T(0) ? pre : T(0)) : tanh_(pre);
    s.next[0][k] = valid ? h : s.prev[0][k];
    s.y[k] = valid ? h : T(0);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const T h = s.next[0][k], dh = s.dstate[0][k] + s.grad_y[k];
    const T dpre = kRelu ? (h > T(0) ? dh : T(0)) : dh * (T(1) - h * h);
    s.dxp[k] = valid ? dpre : T(0);
    s.dstate[0][k] = valid ? T(0) : s.dstate[0][k];  // the executor adds d rec W_hh
  }
};

}  // namespace revrnn
