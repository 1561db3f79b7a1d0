// LiBRU pointwise math (revrnn.nn.LiBRU), one element (row b, unit j), shared by the CPU executor
// and the CUDA kernels. Blocks (a_c, a_z) of xp + rec, where the recurrent GEMM reads the
// feedback g(h) (revrnn/executor.h: Cell::kFeedback):
//   probs     g(h) = log(max(h, 0) + 1e-11):  z = σ(a_z), c = σ(a_c), h' = z h + (1 - z) c
//   logprobs  g(h) = h:  c = softplus(a_c), h' = logaddexp(h - softplus(-a_z), c - softplus(a_z))
// softplus and logaddexp as torch computes them (softplus(x) = x above 20).
#pragma once

#include "revrnn/step.h"

namespace revrnn {

template <typename T>
REVRNN_HD T softplus_(T x) {
  return x > T(20) ? x : log1p_(exp_(x));
}

template <int Form>  // 0: probs, 1: logprobs
struct LiBRUv {
  static constexpr int kStates = 1;
  static constexpr int kPhases = 1;
  static constexpr int kGates = 2;
  static constexpr int kXpGates = kGates;
  static constexpr int kActs = 2;  // the pre-activations a_c, a_z
  static constexpr bool kRecIsXp = true;
  static constexpr bool kFeedback = Form == 0;  // the GEMM reads feedback(h), not h

  // g(h) and g'(h) of the probs form: torch's clamp_min passes the gradient where h >= 0
  template <typename T>
  REVRNN_HD static T feedback(T h) {
    return log_((h > T(0) ? h : T(0)) + T(1e-11));
  }
  template <typename T>
  REVRNN_HD static T dfeedback(T h) {
    return h >= T(0) ? T(1) / (h + T(1e-11)) : T(0);
  }

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T ac = s.xp[g] + s.rec[g], az = s.xp[g + H] + s.rec[g + H];
    s.act[g] = ac;
    s.act[g + H] = az;
    const T hp = s.prev[0][k];
    if (Form == 0) {
      keep_gate_update(s, k, sigmoid(az), sigmoid(ac), valid);
    } else {
      const T u = hp - softplus_(-az), v = softplus_(ac) - softplus_(az);
      const T m = u > v ? u : v, d = u > v ? v - u : u - v;
      const T h = m + log1p_(exp_(d));
      s.next[0][k] = valid ? h : hp;
      s.y[k] = valid ? h : T(0);
    }
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T ac = s.act[g], az = s.act[g + H], hp = s.prev[0][k];
    const T dh = s.dstate[0][k] + s.grad_y[k];
    if (Form == 0) {
      const T z = sigmoid(az), c = sigmoid(ac);
      s.dxp[g] = valid ? dh * (T(1) - z) * c * (T(1) - c) : T(0);
      s.dxp[g + H] = valid ? dh * (hp - c) * z * (T(1) - z) : T(0);
      s.dstate[0][k] = valid ? dh * z : s.dstate[0][k];  // the executor adds the GEMM's part
    } else {
      const T u = hp - softplus_(-az), v = softplus_(ac) - softplus_(az);
      const T du = dh / (T(1) + exp_(v - u)), dv = dh / (T(1) + exp_(u - v));  // torch's logaddexp
      const T dsp_ac = ac > T(20) ? T(1) : sigmoid(ac);
      s.dxp[g] = valid ? dv * dsp_ac : T(0);
      s.dxp[g + H] = valid ? du * sigmoid(-az) - dv * sigmoid(az) : T(0);
      s.dstate[0][k] = valid ? du : s.dstate[0][k];
    }
  }
};

}  // namespace revrnn
