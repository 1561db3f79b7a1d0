// Gate policies of the LSTM and reset-after GRU element functions (revrnn/lstm.h, revrnn/gru.h):
// how a sigmoid gate q (of the cell's Q sigmoid gates) turns its pre-activation s into the gate,
// and the gradient of the gate's argument back into d s. One element (unit j); `kept` points at
// the element's slot in the act columns after the cell's own (kKept columns, one per gate, H
// apart), `params` and `dparams` at the cell's parameters beyond the GEMMs' (StepForward::params).
//   SigmoidGate  σ(s): torch.nn's gates, nothing kept, no parameters
//   KafGate      σ(½ s + ½ KAF_n(s)), KAF_n(s) = Σ_i α_{n,i} exp(-γ (s - d_i)²), n = q H + j
//                (revrnn/cells/kaf/spec.py): keeps s; params = [D, γ, d (D), α (Q H × D)], and
//                dparams, in the same layout, accumulates α's gradient over the chunk (each
//                thread owns its units' rows, so the sums need no atomics).
#pragma once

#include "revrnn/common.h"

namespace revrnn {

struct SigmoidGate {
  static constexpr int kKept = 0;
  static constexpr bool kParams = false;

  template <typename T>
  REVRNN_HD static T forward(const T*, T*, int64_t, int, int64_t, T s) {
    return sigmoid(s);
  }

  // d s from d u, u the gate's σ argument (here s itself)
  template <typename T>
  REVRNN_HD static T backward(const T*, T*, const T*, int64_t, int, int64_t, T du) {
    return du;
  }
};

struct KafGate {
  static constexpr int kKept = 1;
  static constexpr bool kParams = true;

  template <typename T>
  REVRNN_HD static T forward(const T* params, T* kept, int64_t H, int q, int64_t j, T s) {
    const int64_t D = int64_t(params[0]);
    const T gamma = params[1], *d = params + 2, *alpha = params + 2 + D + (q * H + j) * D;
    T k = T(0);
    for (int64_t i = 0; i < D; ++i) {
      const T e = s - d[i];
      k += alpha[i] * exp_(-gamma * e * e);
    }
    kept[q * H] = s;
    return sigmoid(T(0.5) * (s + k));
  }

  template <typename T>
  REVRNN_HD static T backward(const T* params, T* dparams, const T* kept, int64_t H, int q, int64_t j, T du) {
    const int64_t D = int64_t(params[0]), n = 2 + D + (q * H + j) * D;
    const T gamma = params[1], *d = params + 2, *alpha = params + n, s = kept[q * H];
    T dk = T(0);
    for (int64_t i = 0; i < D; ++i) {
      const T e = s - d[i], w = exp_(-gamma * e * e);
      dk -= T(2) * gamma * e * alpha[i] * w;
      dparams[n + i] += T(0.5) * du * w;
    }
    return T(0.5) * du * (T(1) + dk);
  }
};

}  // namespace revrnn
