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
    const T h = kt * h_new + (T(1) - kt) * hp;
    const T c = kt * c_new + (T(1) - kt) * cp;
    s.next[0][k] = valid ? h : hp;
    s.next[1][k] = valid ? c : cp;
    s.y[k] = valid ? h : T(0);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const LSTM::Gates<T> q = LSTM::kept_gates(s, b, j);
    const T hp = s.prev[0][k], cp = s.prev[1][k], kt = s.unit[j];
    const bool open = valid && kt > T(0);
    const T c_new = q.f * cp + q.i * q.g;
    const T tc = tanh_(c_new);
    const T h_new = q.o * tc;
    const T dh_out = s.dstate[0][k] + s.grad_y[k], dc_out = s.dstate[1][k];
    const T dh = kt * dh_out;                                // d h_new
    const T dc = kt * dc_out + dh * q.o * (T(1) - tc * tc);  // d c_new, both paths
    LSTM::gate_grads(s, b, j, q, dc, dh, tc, cp, open);
    s.dunit[k] = open ? dh_out * (h_new - hp) + dc_out * (c_new - cp) : T(0);
    // closed on a valid row: h' = h is the output too, so dh takes the output's gradient
    s.dstate[0][k] = open ? (T(1) - kt) * dh_out : (valid ? dh_out : s.dstate[0][k]);
    s.dstate[1][k] = open ? dc * q.f + (T(1) - kt) * dc_out : s.dstate[1][k];
  }
};

}  // namespace revrnn
