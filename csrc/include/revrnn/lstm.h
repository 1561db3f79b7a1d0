// LSTM pointwise math (torch.nn.LSTM without projection), one element (row b, unit j), shared
// verbatim by the CPU executor and the CUDA kernels. Gate blocks i, f, g, o; states (h, c).
// `valid` is false on rows whose sequence has ended (masked): state kept, output 0, and the
// state's gradient passes through. Selects, not branches, so the loops vectorise.
#pragma once

#include "revrnn/step.h"

namespace revrnn {

struct LSTM {
  static constexpr int kStates = 2;
  static constexpr int kPhases = 1;
  static constexpr int kGates = 4;  // G = 4H
  static constexpr int kActs = 4;   // activations i, f, g, o kept per step
  static constexpr bool kRecIsXp = true;  // d rec == d xp: one buffer

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 4 * H + j, k = b * H + j;
    const T* x = s.xp + g;
    const T* r = s.rec + g;
    const T i = sigmoid(x[0] + r[0]), f = sigmoid(x[H] + r[H]);
    const T gg = tanh_(x[2 * H] + r[2 * H]), o = sigmoid(x[3 * H] + r[3 * H]);
    T* a = s.act + g;
    a[0] = i;
    a[H] = f;
    a[2 * H] = gg;
    a[3 * H] = o;
    const T hp = s.prev[0][k], cp = s.prev[1][k];
    const T c = f * cp + i * gg;
    const T h = o * tanh_(c);
    s.next[0][k] = valid ? h : hp;
    s.next[1][k] = valid ? c : cp;
    s.y[k] = valid ? h : T(0);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 4 * H + j, k = b * H + j;
    const T* a = s.act + g;
    const T i = a[0], f = a[H], gg = a[2 * H], o = a[3 * H];
    const T tc = tanh_(s.next[1][k]);
    const T dh = s.dstate[0][k] + s.grad_y[k];
    const T dc = s.dstate[1][k] + dh * o * (T(1) - tc * tc);
    T* d = s.dxp + g;
    d[0] = valid ? dc * gg * i * (T(1) - i) : T(0);
    d[H] = valid ? dc * s.prev[1][k] * f * (T(1) - f) : T(0);
    d[2 * H] = valid ? dc * i * (T(1) - gg * gg) : T(0);
    d[3 * H] = valid ? dh * tc * o * (T(1) - o) : T(0);
    s.dstate[1][k] = valid ? dc * f : s.dstate[1][k];
    s.dstate[0][k] = valid ? T(0) : s.dstate[0][k];  // the executor adds d rec W_hh
  }
};

}  // namespace revrnn
