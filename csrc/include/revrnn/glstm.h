// g-LSTM pointwise math (revrnn.nn.GLSTM, dense), one element (row b, unit j), shared by the CPU
// executor and the CUDA kernels: the LSTM update (revrnn/lstm.h) blended by the unit's time gate
// k = unit[j] of this step, h' = k h_new + (1 - k) h (h' = h where the gate is closed, k = 0),
// c alike. Backward also writes each element's part of d k (dunit); the caller
// sums the rows and turns d k into the gradients of mu and sigma.
#pragma once

#include "revrnn/lstm.h"

namespace revrnn {

struct GLSTM {
  static constexpr int kStates = 2;
  static constexpr int kPhases = 1;
  static constexpr int kGates = 4;
  static constexpr int kXpGates = kGates;  // columns of xp: Gx = kXpGates * H
  static constexpr int kActs = 4;
  static constexpr bool kRecIsXp = true;
  static constexpr bool kUnit = true;  // reads StepForward::unit, writes StepBackward::dunit

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const LSTM::Gates<T> q = LSTM::gates(s, b, j);
    const T hp = s.prev[0][k], cp = s.prev[1][k], kt = s.unit[j];
    const T c_new = q.f * cp + q.i * q.g;
    const T h_new = q.o * tanh_(c_new);
    // no select on k > 0: a closed gate is exactly k = 0, which keeps h and c exactly, and a
    // select would sink tanh into a branch that does not vectorise
    LSTM::write(s, k, kt * h_new + (T(1) - kt) * hp, kt * c_new + (T(1) - kt) * cp, valid);
  }

  // A closed gate (k = 0) needs no select: d h_new = d c_new = 0 and the states' gradients pass
  // through exactly, as the forward's blend keeps the states exactly. d k is written for closed
  // units too (a select would keep the loop from vectorising); mu's and sigma's gradients carry
  // the factor k (time_gate_grads), so it contributes nothing there.
  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const LSTM::Gates<T> q = LSTM::kept_gates(s, b, j);
    const T hp = s.prev[0][k], cp = s.prev[1][k], kt = s.unit[j];
    const T c_new = q.f * cp + q.i * q.g;
    const T tc = tanh_(c_new);
    const T h_new = q.o * tc;
    const T dh_out = s.dstate[0][k] + s.grad_y[k], dc_out = s.dstate[1][k];
    const T dh = kt * dh_out;                                // d h_new
    const T dc = kt * dc_out + dh * q.o * (T(1) - tc * tc);  // d c_new, both paths
    LSTM::gate_grads(s, b, j, q, dc, dh, tc, cp, valid);
    const T dk = dh_out * (h_new - hp) + dc_out * (c_new - cp);
    s.dunit[k] = valid ? dk : T(0);
    s.dstate[0][k] = valid ? (T(1) - kt) * dh_out : s.dstate[0][k];
    s.dstate[1][k] = valid ? dc * q.f + (T(1) - kt) * dc_out : s.dstate[1][k];
  }
};

}  // namespace revrnn
