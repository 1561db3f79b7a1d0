// Light GRU pointwise math (revrnn.nn.LiGRU), one element (row b, unit j), shared by the CPU
// executor and the CUDA kernels. Blocks (a_h, a_z) of xp and of rec = h W_hh^T; aux is the
// recurrent-dropout mask m (inverted dropout, fixed over time; ones without dropout, so that
// the loops have no branch on it):
//   z = σ(a_z + rec_z),  n = ReLU(a_h + rec_h) m,  h' = z h + (1 - z) n.
#pragma once

#include "revrnn/step.h"

namespace revrnn {

struct LiGRU {
  static constexpr int kStates = 1;
  static constexpr int kPhases = 1;
  static constexpr int kGates = 2;  // G = 2H
  static constexpr int kXpGates = kGates;  // columns of xp: Gx = kXpGates * H
  static constexpr int kActs = 2;   // the candidate's pre-activation and z
  static constexpr bool kRecIsXp = true;
  static constexpr bool kAux = true;  // reads StepForward::aux

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T pre = s.xp[g] + s.rec[g];
    const T z = sigmoid(s.xp[g + H] + s.rec[g + H]);
    const T relu = pre > T(0) ? pre : T(0);
    const T n = relu * s.aux[k];
    T* a = s.act + g;
    a[0] = pre;
    a[H] = z;
    keep_gate_update(s, k, z, n, valid);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T pre = s.act[g], z = s.act[g + H], m = s.aux[k];
    const T relu_grad = pre > T(0) ? m : T(0);  // d n / d pre
    const T n = (pre > T(0) ? pre : T(0)) * m;
    const T hp = s.prev[0][k];
    const T dh = s.dstate[0][k] + s.grad_y[k];
    const T dpre = dh * (T(1) - z) * relu_grad;
    const T dz = dh * (hp - n) * z * (T(1) - z);
    s.dxp[g] = valid ? dpre : T(0);
    s.dxp[g + H] = valid ? dz : T(0);
    s.dstate[0][k] = valid ? dh * z : s.dstate[0][k];  // the executor adds d rec W_hh
  }
};

}  // namespace revrnn
