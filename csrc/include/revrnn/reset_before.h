// Reset-before gated units: the GRU with reset_after=False (gate blocks r, z, n;
// h' = z h + (1 - z) n) and the MGU (blocks f, n; h' = (1 - f) h + f n), one element (row b,
// unit j) at a time, shared by the CPU executor and the CUDA kernels. Two phases per step
// (revrnn/executor.h): the gates from their pre-activation, which write mid = (reset gate) h;
// then the candidate n = tanh(xp_n + mid W_n^T) and the update. Backward: phase 1 leaves the gate
// columns' parts that do not go through mid (and h's direct part); phase 0 adds d mid's.
//
// The variant V says what feeds the gates (revrnn/cells/gru/spec.py, Dey & Salem; Heck & Salem
// for the MGU): 0 the input too (xp holds the gates' and the candidate's blocks, biases folded
// in), 1 and 2 only rec plus the gate bias (xp holds the candidate's block alone). b_rec (G
// entries, the gates' read) is always given, zeros where the cell has no gate bias: a branch on
// it would keep the loops from vectorising.
#pragma once

#include "revrnn/step.h"

namespace revrnn {

// What the two cells share; Gates = the number of gate blocks before the candidate.
template <int V, int Gates>
struct ResetBefore {
  static_assert(V >= 0 && V <= 2, "variant 3 (gates from the bias alone) has no executor yet");
  static constexpr int kStates = 1;
  static constexpr int kPhases = 2;
  static constexpr int kGates = Gates + 1;                // rec: G, phase 0 the first Gates H
  static constexpr int kXpGates = V == 0 ? Gates + 1 : 1;  // xp
  static constexpr int kActs = Gates + 1;                 // the gates and n
  static constexpr bool kRecIsXp = V == 0;
  static constexpr bool kRecBias = true;  // reads b_rec, never null

  // The pre-activation of gate q of element (b, j).
  template <typename T>
  REVRNN_HD static T gate_pre(const StepForward<T>& s, int64_t b, int64_t j, int q) {
    const int64_t H = s.H;
    const T rec = s.rec[b * kGates * H + q * H + j];
    const T in = V == 0 ? s.xp[b * kXpGates * H + q * H + j] + rec : rec;
    return in + s.b_rec[q * H + j];
  }

  // The candidate of element (b, j), kept in act.
  template <typename T>
  REVRNN_HD static T candidate(const StepForward<T>& s, int64_t b, int64_t j) {
    const int64_t H = s.H;
    const T n = tanh_(s.xp[b * kXpGates * H + (kXpGates - 1) * H + j] + s.rec[b * kGates * H + Gates * H + j]);
    s.act[b * kActs * H + Gates * H + j] = n;
    return n;
  }

  // d of gate q's pre-activation into d rec (and d xp in variant 0).
  template <typename T>
  REVRNN_HD static void gate_grad(const StepBackward<T>& s, int64_t b, int64_t j, int q, T d) {
    const int64_t H = s.H;
    s.drec[b * kGates * H + q * H + j] = d;
    if (V == 0) s.dxp[b * kXpGates * H + q * H + j] = d;
  }

  // d of the candidate's pre-activation into d rec's and d xp's candidate blocks.
  template <typename T>
  REVRNN_HD static void candidate_grad(const StepBackward<T>& s, int64_t b, int64_t j, T d) {
    const int64_t H = s.H;
    s.drec[b * kGates * H + Gates * H + j] = d;
    if (V != 0) s.dxp[b * kXpGates * H + j] = d;  // variant 0: the same buffer
  }
};

template <int V>
struct ResetBeforeGRUv : ResetBefore<V, 2> {
  using Base = ResetBefore<V, 2>;

  template <typename T>
  REVRNN_HD static void forward_gates(const StepForward<T>& s, int64_t b, int64_t j, bool) {
    const int64_t H = s.H, a = b * 3 * H + j, k = b * H + j;
    const T r = sigmoid(Base::gate_pre(s, b, j, 0)), z = sigmoid(Base::gate_pre(s, b, j, 1));
    s.act[a] = r;
    s.act[a + H] = z;
    s.mid[k] = r * s.prev[0][k];
  }

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const T n = Base::candidate(s, b, j);
    keep_gate_update(s, b * s.H + j, s.act[b * 3 * s.H + s.H + j], n, valid);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, a = b * 3 * H + j, k = b * H + j;
    const T z = s.act[a + H], n = s.act[a + 2 * H], hp = s.prev[0][k];
    const T dh = s.dstate[0][k] + s.grad_y[k];
    Base::gate_grad(s, b, j, 1, valid ? dh * (hp - n) * z * (T(1) - z) : T(0));
    Base::candidate_grad(s, b, j, valid ? dh * (T(1) - z) * (T(1) - n * n) : T(0));
    s.dstate[0][k] = valid ? dh * z : s.dstate[0][k];
  }

  template <typename T>
  REVRNN_HD static void backward_gates(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const T r = s.act[b * 3 * s.H + j], dmid = s.dmid[k];
    Base::gate_grad(s, b, j, 0, valid ? dmid * s.prev[0][k] * r * (T(1) - r) : T(0));
    s.dstate[0][k] = valid ? s.dstate[0][k] + dmid * r : s.dstate[0][k];
  }
};

template <int V>
struct MGUv : ResetBefore<V, 1> {
  using Base = ResetBefore<V, 1>;

  template <typename T>
  REVRNN_HD static void forward_gates(const StepForward<T>& s, int64_t b, int64_t j, bool) {
    const int64_t k = b * s.H + j;
    const T f = sigmoid(Base::gate_pre(s, b, j, 0));
    s.act[b * 2 * s.H + j] = f;
    s.mid[k] = f * s.prev[0][k];
  }

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const T n = Base::candidate(s, b, j), f = s.act[b * 2 * s.H + j], hp = s.prev[0][k];
    const T h = (T(1) - f) * hp + f * n;
    s.next[0][k] = valid ? h : hp;
    s.y[k] = valid ? h : T(0);
  }

  // phase 1 leaves d f's part through the update in d rec's f column, before σ's derivative
  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, a = b * 2 * H + j, k = b * H + j;
    const T f = s.act[a], n = s.act[a + H], hp = s.prev[0][k];
    const T dh = s.dstate[0][k] + s.grad_y[k];
    s.drec[a] = valid ? dh * (n - hp) : T(0);
    Base::candidate_grad(s, b, j, valid ? dh * f * (T(1) - n * n) : T(0));
    s.dstate[0][k] = valid ? dh * (T(1) - f) : s.dstate[0][k];
  }

  template <typename T>
  REVRNN_HD static void backward_gates(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t a = b * 2 * s.H + j, k = b * s.H + j;
    const T f = s.act[a], dmid = s.dmid[k];
    Base::gate_grad(s, b, j, 0, valid ? (s.drec[a] + dmid * s.prev[0][k]) * f * (T(1) - f) : T(0));
    s.dstate[0][k] = valid ? s.dstate[0][k] + dmid * f : s.dstate[0][k];
  }
};

using ResetBeforeGRU = ResetBeforeGRUv<0>;
using MGU = MGUv<0>;

}  // namespace revrnn
