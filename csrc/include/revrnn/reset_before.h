// Reset-before gated units, variant 0 (biases in the projection): the GRU with
// reset_after=False (gate blocks r, z, n; h' = z h + (1 - z) n) and the MGU (blocks f, n;
// h' = (1 - f) h + f n), one element (row b, unit j) at a time, shared by the CPU executor and
// the CUDA kernels. Two phases per step (revrnn/executor.h): the gates from xp + h W_0^T, which
// write mid = (reset gate) h; then the candidate n = tanh(xp_n + mid W_n^T) and the update.
// Backward: phase 1 leaves the gate columns' parts that do not go through mid (and h's direct
// part); phase 0 adds d mid's.
#pragma once

#include "revrnn/step.h"

namespace revrnn {

struct ResetBeforeGRU {
  static constexpr int kStates = 1;
  static constexpr int kPhases = 2;
  static constexpr int kGates = 3;  // G = 3H, phase 0 the first 2H
  static constexpr int kActs = 3;   // r, z, n
  static constexpr bool kRecIsXp = true;

  template <typename T>
  REVRNN_HD static void forward_gates(const StepForward<T>& s, int64_t b, int64_t j, bool) {
    const int64_t H = s.H, g = b * 3 * H + j, k = b * H + j;
    const T r = sigmoid(s.xp[g] + s.rec[g]), z = sigmoid(s.xp[g + H] + s.rec[g + H]);
    s.act[g] = r;
    s.act[g + H] = z;
    s.mid[k] = r * s.prev[0][k];
  }

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 3 * H + j, k = b * H + j;
    const T n = tanh_(s.xp[g + 2 * H] + s.rec[g + 2 * H]);
    s.act[g + 2 * H] = n;
    keep_gate_update(s, k, s.act[g + H], n, valid);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 3 * H + j, k = b * H + j;
    const T z = s.act[g + H], n = s.act[g + 2 * H], hp = s.prev[0][k];
    const T dh = s.dstate[0][k] + s.grad_y[k];
    s.dxp[g + H] = valid ? dh * (hp - n) * z * (T(1) - z) : T(0);
    s.dxp[g + 2 * H] = valid ? dh * (T(1) - z) * (T(1) - n * n) : T(0);
    s.dstate[0][k] = valid ? dh * z : s.dstate[0][k];
  }

  template <typename T>
  REVRNN_HD static void backward_gates(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 3 * H + j, k = b * H + j;
    const T r = s.act[g], dmid = s.dmid[k];
    s.dxp[g] = valid ? dmid * s.prev[0][k] * r * (T(1) - r) : T(0);
    s.dstate[0][k] = valid ? s.dstate[0][k] + dmid * r : s.dstate[0][k];
  }
};

struct MGU {
  static constexpr int kStates = 1;
  static constexpr int kPhases = 2;
  static constexpr int kGates = 2;  // G = 2H, phase 0 the first H
  static constexpr int kActs = 2;   // f, n
  static constexpr bool kRecIsXp = true;

  template <typename T>
  REVRNN_HD static void forward_gates(const StepForward<T>& s, int64_t b, int64_t j, bool) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T f = sigmoid(s.xp[g] + s.rec[g]);
    s.act[g] = f;
    s.mid[k] = f * s.prev[0][k];
  }

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T n = tanh_(s.xp[g + H] + s.rec[g + H]), f = s.act[g], hp = s.prev[0][k];
    s.act[g + H] = n;
    const T h = (T(1) - f) * hp + f * n;
    s.next[0][k] = valid ? h : hp;
    s.y[k] = valid ? h : T(0);
  }

  // phase 1 leaves d f's part through the update in the f column, before σ's derivative
  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T f = s.act[g], n = s.act[g + H], hp = s.prev[0][k];
    const T dh = s.dstate[0][k] + s.grad_y[k];
    s.dxp[g] = valid ? dh * (n - hp) : T(0);
    s.dxp[g + H] = valid ? dh * f * (T(1) - n * n) : T(0);
    s.dstate[0][k] = valid ? dh * (T(1) - f) : s.dstate[0][k];
  }

  template <typename T>
  REVRNN_HD static void backward_gates(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t H = s.H, g = b * 2 * H + j, k = b * H + j;
    const T f = s.act[g], dmid = s.dmid[k];
    s.dxp[g] = valid ? (s.dxp[g] + dmid * s.prev[0][k]) * f * (T(1) - f) : T(0);
    s.dstate[0][k] = valid ? s.dstate[0][k] + dmid * f : s.dstate[0][k];
  }
};

}  // namespace revrnn
