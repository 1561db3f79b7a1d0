// RevGRU's half-update (MacKay et al. 2018; revrnn/cells/reversible/revgru.py), host and device:
//   [s; r] = σ(xp_zr + hb U_zr^T),  z = m s + (1 - m),  g = tanh(xp_g + (r hb) U_g^T)
//   h <- MUL(h, z) + (1 - z) g   exactly (h + (1 - σ) g without forgetting)
// Two GEMMs: the candidate's reads r * hb of every unit. act holds s, r, g, z and u = (1 - z) g.
#pragma once

#include "revrnn/half.h"

namespace revrnn {

struct RevGRU {
  static constexpr int kStates = 1;
  static constexpr int kBlocks = 3;
  static constexpr int kMultiplies = 1;
  static constexpr int kActs = 5;
  static constexpr int kHbBlocks = 2;  // d hb += da[:, :2G] W_zr (the loop adds it, half_grad_hb)

  template <typename T>
  struct Reset {  // s, r and r * hb
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
      const int64_t G = s.G, k = b * s.R + j;
      const T* x = s.xp + b * s.xs + j;
      T* a = s.act + b * kActs * G + j;
      a[0] = sigmoid(x[0] + s.pre[k]);
      a[G] = sigmoid(x[G] + s.pre[k + G]);
      s.rh[b * G + j] = a[G] * s.hb[b * s.H + j];
    }
  };

  template <typename T>
  struct Candidate {  // g, z and the update term
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
      const int64_t G = s.G;
      T* a = s.act + b * kActs * G + j;
      const T g = tanh_(s.xp[b * s.xs + 2 * G + j] + s.pre[b * s.R + 2 * G + j]);
      const T z = s.restrict(a[0]);
      a[2 * G] = g;
      a[3 * G] = z;
      a[4 * G] = (T(1) - z) * g;
    }
  };

  // The exact update of element (b, j) forward or back; returns the float value of the new h.
  template <bool kForward, typename T>
  REVRNN_HD static T exact(const Half<T>& s, int64_t b, int64_t j, bool valid) {
    const int64_t i = b * s.H + j, G = s.G;
    const T* a = s.act + b * kActs * G + j;
    const int64_t q = fixed::quantise_update(a[4 * G], valid);
    int64_t h = s.own[0][i];
    if (valid) h = fixed::update<kForward>(s.buf, b * G + j, s.op, h, a[3 * G], s.forget_bits, q);
    s.own[0][i] = h;
    return s.hf[i] = fixed::to_float<T>(h);
  }

  template <typename T>
  struct Advance {
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const { exact<true>(s, b, j, valid); }
  };

  template <typename T>
  struct Retreat {  // the inverse of Advance, then the pointwise gradients
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
      const T prev = exact<false>(s, b, j, valid);
      const int64_t i = b * s.H + j, G = s.G;
      const T* a = s.act + b * kActs * G + j;
      const T sv = a[0], g = a[2 * G], z = a[3 * G], dh = s.dh[0][i];
      const T dz = s.forget_bits ? dh * (prev - g) : -dh * g;
      T* d = s.da + b * s.R + j;
      d[0] = valid ? dz * (s.max_forget * sv * (T(1) - sv)) : T(0);
      d[2 * G] = valid ? dh * (T(1) - z) * (T(1) - g * g) : T(0);
      s.dh[0][i] = valid ? dh * fixed::gate_value(z, s.forget_bits) : dh;
    }
  };

  template <typename T>
  struct ResetGrad {  // d r from d (r * hb); the r-path part of d hb
    Half<T> s;
    REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
      const int64_t G = s.G;
      const T r = s.act[b * kActs * G + G + j], drh = s.drh[b * G + j], hb = s.hb[b * s.H + j];
      s.da[b * s.R + G + j] = drh * hb * r * (T(1) - r);
      s.dhb[b * s.H + j] += drh * r;
    }
  };

  template <class Device, typename T>
  static void gates(Device& dev, const Half<T>& s) {
    half_gemm(dev, 0, 2, s.B, s.G, s.R, s.hb, s.H, s.w_hh_t, s.pre);
    dev.pointwise(s.B, s.units(), nullptr, Reset<T>{s});
    half_gemm(dev, 2, 3, s.B, s.G, s.R, static_cast<const T*>(s.rh), s.G, s.w_hh_t, s.pre);
    dev.pointwise(s.B, s.units(), nullptr, Candidate<T>{s});
  }

  template <class Device, typename T>
  static void advance(Device& dev, const Half<T>& s) {
    gates(dev, s);
    dev.pointwise(s.B, s.units(), s.mask, Advance<T>{s});
  }

  template <class Device, typename T>
  static void retreat(Device& dev, const Half<T>& s) {
    gates(dev, s);
    dev.pointwise(s.B, s.units(), s.mask, Retreat<T>{s});
    const int64_t G = s.G;  // d (r hb) = d of the candidate's pre-activation W_g
    dev.gemm(false, false, s.B, G, G, T(1), s.da + 2 * G, s.R, s.w_hh + 2 * G * G, G, T(0), s.drh, G);
    dev.pointwise(s.B, s.units(), nullptr, ResetGrad<T>{s});
  }
};

}  // namespace revrnn
