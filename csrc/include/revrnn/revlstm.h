// RevLSTM's half-update (MacKay et al. 2018; revrnn/cells/reversible/revlstm.py), host and device:
//   [f; g; i; o; p] = xp + hb U^T (σ, tanh, σ, σ, σ; f and p restricted to [2**-k, 1])
//   c <- MUL(c, f) + i g,  then  h <- MUL(h, p) + o tanh(c)   exactly
// act holds σ(f), g, i, o, σ(p), f, p, i g, tanh(c), o tanh(c) and the old c. The float value of
// c is written by the integer loops, so that tanh's loop has no int64 conversion (which x86
// does not vectorise) and runs SIMD.
#pragma once

#include "revrnn/half.h"

namespace revrnn {

struct RevLSTM {
  static constexpr int kStates = 2;
  static constexpr int kBlocks = 5;
  static constexpr int kMultiplies = 2;
  static constexpr int kActs = 11;
  static constexpr int kHbBlocks = 5;  // d hb += da W_hh (the loop adds it, half_grad_hb)

  template <typename T>
  struct Gates {
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
      const int64_t G = s.G, k = b * s.R + j;
      const T* x = s.xp + b * s.xs + j;
      T* a = s.act + b * kActs * G + j;
      const T sf = sigmoid(x[0] + s.pre[k]), g = tanh_(x[G] + s.pre[k + G]);
      const T i = sigmoid(x[2 * G] + s.pre[k + 2 * G]), o = sigmoid(x[3 * G] + s.pre[k + 3 * G]);
      const T sp = sigmoid(x[4 * G] + s.pre[k + 4 * G]);
      a[0] = sf;
      a[G] = g;
      a[2 * G] = i;
      a[3 * G] = o;
      a[4 * G] = sp;
      a[5 * G] = s.restrict(sf);
      a[6 * G] = s.restrict(sp);
      a[7 * G] = i * g;
    }
  };

  template <typename T>
  struct CellFloat {  // the float value of c, for CellTanh
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
      s.act[b * kActs * s.G + 8 * s.G + j] = fixed::to_float<T>(s.own[1][b * s.H + j]);
    }
  };

  template <typename T>
  struct CellTanh {  // tanh of c (its float value in column 8) and the h update term
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
      T* a = s.act + b * kActs * s.G + j;
      const T tc = tanh_(a[8 * s.G]);
      a[8 * s.G] = tc;
      a[9 * s.G] = a[3 * s.G] * tc;
    }
  };

  // State `which` (0: h with gate p, 1: c with gate f) forward or back through multiply `op`.
  template <typename T, bool kForward>
  struct Update {
    Half<T> s;
    int which;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
      const int64_t i = b * s.H + j, G = s.G;
      const T* a = s.act + b * kActs * G + j;
      const T gate = which ? a[5 * G] : a[6 * G];
      const int64_t q = fixed::quantise_update(which ? a[7 * G] : a[9 * G], valid), op = s.op + 1 - which;
      int64_t v = s.own[which][i];
      if (valid) v = fixed::update<kForward>(s.buf, b * G + j, op, v, gate, s.forget_bits, q);
      s.own[which][i] = v;
      if (!which)
        s.hf[i] = fixed::to_float<T>(v);
      else  // forward: the new c, for CellTanh; reverse: the old one, for Grad
        s.act[b * kActs * G + (kForward ? 8 : 10) * G + j] = fixed::to_float<T>(v);
    }
  };

  template <typename T>
  struct Grad {  // the pointwise gradients from the restored states
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
      const int64_t i = b * s.H + j, G = s.G;
      const T* a = s.act + b * kActs * G + j;
      const T sf = a[0], g = a[G], in = a[2 * G], o = a[3 * G], sp = a[4 * G], tc = a[8 * G];
      const T h = s.hf[i], c = a[10 * G], dh = s.dh[0][i], dc = s.dh[1][i];
      const T dct = dc + dh * o * (T(1) - tc * tc);
      const T dp = s.forget_bits ? dh * h : T(0), df = s.forget_bits ? dct * c : T(0), m = s.max_forget;
      T* d = s.da + b * s.R + j;
      d[0] = valid ? df * m * sf * (T(1) - sf) : T(0);
      d[G] = valid ? dct * in * (T(1) - g * g) : T(0);
      d[2 * G] = valid ? dct * g * in * (T(1) - in) : T(0);
      d[3 * G] = valid ? dh * tc * o * (T(1) - o) : T(0);
      d[4 * G] = valid ? dp * m * sp * (T(1) - sp) : T(0);
      s.dh[0][i] = valid ? dh * fixed::gate_value(a[6 * G], s.forget_bits) : dh;
      s.dh[1][i] = valid ? dct * fixed::gate_value(a[5 * G], s.forget_bits) : dc;
    }
  };

  template <class Device, typename T>
  static void advance(Device& dev, const Half<T>& s) {
    half_gemm(dev, 0, kBlocks, s.B, s.G, s.R, s.hb, s.H, s.w_hh_t, s.pre);
    dev.pointwise(s.B, s.units(), nullptr, Gates<T>{s});
    dev.pointwise(s.B, s.units(), s.mask, Update<T, true>{s, 1});
    dev.pointwise(s.B, s.units(), nullptr, CellTanh<T>{s});
    dev.pointwise(s.B, s.units(), s.mask, Update<T, true>{s, 0});
  }

  template <class Device, typename T>
  static void retreat(Device& dev, const Half<T>& s) {
    half_gemm(dev, 0, kBlocks, s.B, s.G, s.R, s.hb, s.H, s.w_hh_t, s.pre);
    dev.pointwise(s.B, s.units(), nullptr, Gates<T>{s});
    dev.pointwise(s.B, s.units(), nullptr, CellFloat<T>{s});
    dev.pointwise(s.B, s.units(), nullptr, CellTanh<T>{s});  // of the new c, as the forward computed it
    dev.pointwise(s.B, s.units(), s.mask, Update<T, false>{s, 0});
    dev.pointwise(s.B, s.units(), s.mask, Update<T, false>{s, 1});
    dev.pointwise(s.B, s.units(), s.mask, Grad<T>{s});
  }
};

}  // namespace revrnn
