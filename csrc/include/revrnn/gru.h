// Reset-after GRU pointwise math (torch.nn.GRU for variant 0; gate blocks r, z, n), one element
// (row b, unit j), shared by the CPU executor and the CUDA kernels. rec = h W_hh^T (3H), b_rec
// the (3H) bias added to it — [b_r, b_z, b_hn] — or null; the candidate is
// tanh(xp_n + r (rec_n + b_hn)), h' = z h + (1 - z) n. The variant V says what feeds the gates
// (revrnn/cells/gru/spec.py, Dey & Salem): 0 the input too (xp holds r, z, n), 1 and 2 only
// rec + b_rec (xp holds the candidate's block alone; variant 2's gate biases are 0). The gate
// policy (revrnn/gates.h) makes r and z torch.nn's σ gates (GRUv) or KAF gates (KAFGRU).
#pragma once

#include "revrnn/gates.h"
#include "revrnn/step.h"

namespace revrnn {

template <int V, class Gate = SigmoidGate>
struct GRUv {
  static_assert(V >= 0 && V <= 2, "variant 3 (gates from the bias alone) runs on variant 1's executor");
  static constexpr int kStates = 1;
  static constexpr int kPhases = 1;
  static constexpr int kGates = 3;                // rec: G = 3H
  static constexpr int kXpGates = V == 0 ? 3 : 1;  // xp: the gates' input terms only in variant 0
  static constexpr int kActs = 4 + 2 * Gate::kKept;  // r, z, n, rec_n + b_hn, and the policy's
  static constexpr bool kRecIsXp = false;         // d rec_n = r d xp_n
  static constexpr bool kParams = Gate::kParams;

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 3 * H + j, k = b * H + j;
    const T* x = s.xp + b * kXpGates * H + j;
    const T* rc = s.rec + g;
    const T br = s.b_rec ? s.b_rec[j] : T(0), bz = s.b_rec ? s.b_rec[H + j] : T(0);
    const T bn = s.b_rec ? s.b_rec[2 * H + j] : T(0);
    T* a = s.act + b * kActs * H + j;
    const T r = Gate::forward(s.params, a + 4 * H, H, 0, j, (V == 0 ? x[0] + rc[0] : rc[0]) + br);
    const T z = Gate::forward(s.params, a + 4 * H, H, 1, j, (V == 0 ? x[H] + rc[H] : rc[H]) + bz);
    const T hn = rc[2 * H] + bn;
    const T n = tanh_(x[(kXpGates - 1) * H] + r * hn);
    a[0] = r;
    a[H] = z;
    a[2 * H] = n;
    a[3 * H] = hn;
    keep_gate_update(s, k, z, n, valid);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 3 * H + j, k = b * H + j;
    const T* a = s.act + b * kActs * H + j;
    const T r = a[0], z = a[H], n = a[2 * H], hn = a[3 * H];
    const T hp = s.prev[0][k];
    const T dh = s.dstate[0][k] + s.grad_y[k];
    const T dz = valid ? dh * (hp - n) * z * (T(1) - z) : T(0);
    const T dn = dh * (T(1) - z) * (T(1) - n * n);
    const T dr = valid ? dn * hn * r * (T(1) - r) : T(0);
    T* dx = s.dxp + b * kXpGates * H + j;
    T* drc = s.drec + g;
    drc[0] = Gate::backward(s.params, s.dparams, a + 4 * H, H, 0, j, dr);
    drc[H] = Gate::backward(s.params, s.dparams, a + 4 * H, H, 1, j, dz);
    drc[2 * H] = valid ? dn * r : T(0);
    if (V == 0) {
      dx[0] = drc[0];
      dx[H] = drc[H];
    }
    dx[(kXpGates - 1) * H] = valid ? dn : T(0);
    s.dstate[0][k] = valid ? dh * z : s.dstate[0][k];  // the executor adds d rec W_hh
  }
};

using GRU = GRUv<0>;
using KAFGRU = GRUv<0, KafGate>;

}  // namespace revrnn
