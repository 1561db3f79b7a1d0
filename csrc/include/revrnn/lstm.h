// LSTM pointwise math (torch.nn.LSTM without projection), one element (row b, unit j), shared
// verbatim by the CPU executor and the CUDA kernels. Gate blocks i, f, g, o; states (h, c). The
// gate policy (revrnn/gates.h) makes i, f, o torch.nn's σ gates (LSTM) or KAF gates (KAFLSTM).
// `valid` is false on rows whose sequence has ended (masked): state kept, output 0, and the
// state's gradient passes through. Selects, not branches, so the loops vectorise.
#pragma once

#include "revrnn/gates.h"
#include "revrnn/step.h"

namespace revrnn {

template <class Gate>
struct LSTMv {
  static constexpr int kStates = 2;
  static constexpr int kPhases = 1;
  static constexpr int kGates = 4;  // G = 4H
  static constexpr int kXpGates = kGates;  // columns of xp: Gx = kXpGates * H
  static constexpr int kActs = 4 + 3 * Gate::kKept;  // i, f, g, o, and what the gate policy keeps
  static constexpr bool kRecIsXp = true;  // d rec == d xp: one buffer
  static constexpr bool kParams = Gate::kParams;

  template <typename T>
  struct Gates {
    T i, f, g, o;
  };

  // The gates of element (b, j) from xp + rec, kept in act; shared with the g-LSTM.
  template <typename T>
  REVRNN_HD static Gates<T> gates(const StepForward<T>& s, int64_t b, int64_t j) {
    const int64_t H = s.H, g = b * 4 * H + j;
    const T* x = s.xp + g;
    const T* r = s.rec + g;
    T* a = s.act + b * kActs * H + j;
    const Gates<T> q{Gate::forward(s.params, a + 4 * H, H, 0, j, x[0] + r[0]),
                     Gate::forward(s.params, a + 4 * H, H, 1, j, x[H] + r[H]), tanh_(x[2 * H] + r[2 * H]),
                     Gate::forward(s.params, a + 4 * H, H, 2, j, x[3 * H] + r[3 * H])};
    a[0] = q.i;
    a[H] = q.f;
    a[2 * H] = q.g;
    a[3 * H] = q.o;
    return q;
  }

  // The gates' pre-activation gradients of element (b, j) from d c_new and d h_new (0 where
  // `keep` is false), with tc = tanh(c_new) and cp = c_{t-1}; shared with the g-LSTM.
  template <typename T>
  REVRNN_HD static void gate_grads(const StepBackward<T>& s, int64_t b, int64_t j, const Gates<T>& q, T dc,
                                   T dh, T tc, T cp, bool keep) {
    const int64_t H = s.H;
    T* d = s.dxp + b * 4 * H + j;
    const T* kept = s.act + b * kActs * H + 4 * H + j;
    d[0] = Gate::backward(s.params, s.dparams, kept, H, 0, j, keep ? dc * q.g * q.i * (T(1) - q.i) : T(0));
    d[H] = Gate::backward(s.params, s.dparams, kept, H, 1, j, keep ? dc * cp * q.f * (T(1) - q.f) : T(0));
    d[2 * H] = keep ? dc * q.i * (T(1) - q.g * q.g) : T(0);
    d[3 * H] = Gate::backward(s.params, s.dparams, kept, H, 2, j, keep ? dh * tc * q.o * (T(1) - q.o) : T(0));
  }

  template <typename T>
  REVRNN_HD static Gates<T> kept_gates(const StepBackward<T>& s, int64_t b, int64_t j) {
    const T* a = s.act + b * kActs * s.H + j;
    return {a[0], a[s.H], a[2 * s.H], a[3 * s.H]};
  }

  // The state after the step on a valid row, kept on an ended one; the output h or 0.
  template <typename T>
  REVRNN_HD static void write(const StepForward<T>& s, int64_t k, T h, T c, bool valid) {
    const T hp = s.prev[0][k], cp = s.prev[1][k];
    s.next[0][k] = valid ? h : hp;
    s.next[1][k] = valid ? c : cp;
    s.y[k] = valid ? h : T(0);
  }

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const Gates<T> q = gates(s, b, j);
    const T c = q.f * s.prev[1][k] + q.i * q.g;
    write(s, k, q.o * tanh_(c), c, valid);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const Gates<T> q = kept_gates(s, b, j);
    const T tc = tanh_(s.next[1][k]);
    const T dh = s.dstate[0][k] + s.grad_y[k];
    const T dc = s.dstate[1][k] + dh * q.o * (T(1) - tc * tc);
    gate_grads(s, b, j, q, dc, dh, tc, s.prev[1][k], valid);
    s.dstate[1][k] = valid ? dc * q.f : s.dstate[1][k];
    s.dstate[0][k] = valid ? T(0) : s.dstate[0][k];  // the executor adds d rec W_hh
  }
};

// The LSTM with proj_size P (torch.nn.LSTM's): the step writes mid = o tanh(c) and the executor
// projects it, h = mid W_hr^T (revrnn/executor.h, Cell::kProj); backward reads d mid = d h W_hr.
template <class Gate>
struct LSTMProjv : LSTMv<Gate> {
  using LSTM = LSTMv<Gate>;
  using LSTM::gate_grads;
  using LSTM::gates;
  using LSTM::kept_gates;
  template <typename T>
  using Gates = typename LSTM::template Gates<T>;
  static constexpr bool kProj = true;

  template <typename T>
  REVRNN_HD static void forward(const StepForward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const Gates<T> q = gates(s, b, j);
    const T cp = s.prev[1][k], c = q.f * cp + q.i * q.g;
    s.next[1][k] = valid ? c : cp;
    s.mid[k] = q.o * tanh_(c);
  }

  template <typename T>
  REVRNN_HD static void backward(const StepBackward<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t k = b * s.H + j;
    const Gates<T> q = kept_gates(s, b, j);
    const T tc = tanh_(s.next[1][k]);
    const T dm = s.dmid[k];  // 0 on an ended row
    const T dc = s.dstate[1][k] + dm * q.o * (T(1) - tc * tc);
    gate_grads(s, b, j, q, dc, dm, tc, s.prev[1][k], valid);
    s.dstate[1][k] = valid ? dc * q.f : s.dstate[1][k];
  }
};

using LSTM = LSTMv<SigmoidGate>;
using LSTMProj = LSTMProjv<SigmoidGate>;
using KAFLSTM = LSTMv<KafGate>;

}  // namespace revrnn
