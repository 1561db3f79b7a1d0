// The g-LSTM's sparse chunk (revrnn.nn.GLSTM; the dense step is revrnn/glstm.h): a unit whose time
// gate is closed (k = 0) keeps h and c exactly, and the gates depend only on t, mu and sigma, so
// each step's open units are known before it runs. Per step the open units' rows of W_hh are
// gathered, the GEMM and the LSTM update run on them alone, and their new states are written into
// h and c in place; a step with no open unit only copies the output. Nothing is kept for closed
// units: per open unit-step its activations and previous state, and the end state. Backward
// restores each previous state from the end state by writing those back, walking the chunk in
// reverse, and adds each open unit's gate rows to d W_hh.
//
// One device member runs it (the gathers and scatters are per step and small); written over the
// device policy like the dense loop.
#pragma once

#include "revrnn/glstm.h"

namespace revrnn {

template <typename T>
struct SparseChunk {
  int64_t K, B, H;
  const T* xp;             // (K, B, 4H)
  const T* w_hh;           // (4H, H)
  const uint8_t* mask;     // (K, B) or null
  const T* gate;           // (K, H) the time gates
  const int64_t* offsets;  // (K + 1): step t's open units are units[offsets[t] .. offsets[t + 1])
  const int64_t* units;    // (N) open unit indices, N = offsets[K]
  T* h;                    // (B, H): in, the chunk's start state; out, its end state (and c)
  T* c;
  T* act;                  // (N, B, 4): i, f, g, o of each open unit-step
  T* prev;                 // (N, B, 2): h and c before each open unit-step
  T* y;                    // forward: (K, B, H)
  const T* grad_y;         // backward: (K, B, H)
  T* dh;                   // backward: (B, H) in, of the end state; out, of the start state (and dc)
  T* dc;
  T* dxp;                  // backward: (K, B, 4H), every element written
  T* dw_hh;                // backward: (4H, H) accumulated into (zeroed by the caller), or null
  T* dgate;                // backward: (K, H) d k summed over the rows, every element written
  T* w;                    // scratch (4 n, H), n the most units open at one step
  T* rec;                  // scratch (B, 4 n)
  T* dw;                   // backward scratch (4 n, H)
};

namespace sparse {

// rows q H + units[u] of W_hh, packed as rows q n + u of w (n open units)
template <typename T>
void gather_rows(const SparseChunk<T>& c, const int64_t* units, int64_t n) {
  for (int q = 0; q < 4; ++q)
    for (int64_t u = 0; u < n; ++u) {
      const T* src = c.w_hh + (q * c.H + units[u]) * c.H;
      T* dst = c.w + (q * n + u) * c.H;
      for (int64_t k = 0; k < c.H; ++k) dst[k] = src[k];
    }
}

}  // namespace sparse

template <class Device, typename T>
void glstm_sparse_forward(Device& dev, const SparseChunk<T>& c) {
  const int64_t H = c.H, B = c.B;
  for (int64_t t = 0; t < c.K; ++t) {
    const int64_t o0 = c.offsets[t], n = c.offsets[t + 1] - o0;
    const int64_t* units = c.units + o0;
    const uint8_t* mask = c.mask ? c.mask + t * B : nullptr;
    if (n) {
      sparse::gather_rows(c, units, n);
      dev.gemm(false, true, B, 4 * n, H, T(1), static_cast<const T*>(c.h), H, static_cast<const T*>(c.w), H, T(0),
               c.rec, 4 * n);
      for (int64_t b = 0; b < B; ++b) {
        const bool valid = mask == nullptr || mask[b] != 0;
        for (int64_t u = 0; u < n; ++u) {
          const int64_t j = units[u], k = b * H + j;
          const T* x = c.xp + (t * B + b) * 4 * H + j;
          const T* r = c.rec + b * 4 * n + u;
          const T i = sigmoid(x[0] + r[0]), f = sigmoid(x[H] + r[n]), g = tanh_(x[2 * H] + r[2 * n]),
                  o = sigmoid(x[3 * H] + r[3 * n]);
          T* a = c.act + ((o0 + u) * B + b) * 4;
          a[0] = i;
          a[1] = f;
          a[2] = g;
          a[3] = o;
          T* p = c.prev + ((o0 + u) * B + b) * 2;
          const T hp = c.h[k], cp = c.c[k], kt = c.gate[t * H + j];
          p[0] = hp;
          p[1] = cp;
          const T c_new = f * cp + i * g;
          c.h[k] = valid ? kt * (o * tanh_(c_new)) + (T(1) - kt) * hp : hp;
          c.c[k] = valid ? kt * c_new + (T(1) - kt) * cp : cp;
        }
      }
    }
    for (int64_t b = 0; b < B; ++b) {  // every unit's output is its state on running rows
      const bool valid = mask == nullptr || mask[b] != 0;
      for (int64_t j = 0; j < H; ++j) c.y[(t * B + b) * H + j] = valid ? c.h[b * H + j] : T(0);
    }
  }
}

template <class Device, typename T>
void glstm_sparse_backward(Device& dev, const SparseChunk<T>& c) {
  const int64_t H = c.H, B = c.B;
  for (int64_t t = c.K - 1; t >= 0; --t) {
    const int64_t o0 = c.offsets[t], n = c.offsets[t + 1] - o0;
    const int64_t* units = c.units + o0;
    const uint8_t* mask = c.mask ? c.mask + t * B : nullptr;
    T* dxp = c.dxp + t * B * 4 * H;
    for (int64_t e = 0; e < B * 4 * H; ++e) dxp[e] = T(0);
    for (int64_t j = 0; j < H; ++j) c.dgate[t * H + j] = T(0);
    for (int64_t b = 0; b < B; ++b) {  // every unit's output is its new state on valid rows
      if (mask && !mask[b]) continue;
      for (int64_t j = 0; j < H; ++j) c.dh[b * H + j] += c.grad_y[(t * B + b) * H + j];
    }
    if (!n) continue;
    for (int64_t b = 0; b < B; ++b) {
      const bool valid = mask == nullptr || mask[b] != 0;
      for (int64_t u = 0; u < n; ++u) {
        const int64_t j = units[u], k = b * H + j;
        const T* a = c.act + ((o0 + u) * B + b) * 4;
        const T* p = c.prev + ((o0 + u) * B + b) * 2;
        const T i = a[0], f = a[1], g = a[2], o = a[3], hp = p[0], cp = p[1], kt = c.gate[t * H + j];
        const T c_new = f * cp + i * g, tc = tanh_(c_new), h_new = o * tc;
        const T dh_out = c.dh[k], dc_out = c.dc[k];
        const T dhn = kt * dh_out, dcn = kt * dc_out + dhn * o * (T(1) - tc * tc);
        T* r = c.rec + b * 4 * n + u;  // d of the gathered pre-activations
        r[0] = valid ? dcn * g * i * (T(1) - i) : T(0);
        r[n] = valid ? dcn * cp * f * (T(1) - f) : T(0);
        r[2 * n] = valid ? dcn * i * (T(1) - g * g) : T(0);
        r[3 * n] = valid ? dhn * tc * o * (T(1) - o) : T(0);
        T* dx = dxp + b * 4 * H + j;
        for (int q = 0; q < 4; ++q) dx[q * H] = r[q * n];
        c.dgate[t * H + j] += valid ? dh_out * (h_new - hp) + dc_out * (c_new - cp) : T(0);
        c.dh[k] = valid ? (T(1) - kt) * dh_out : dh_out;
        c.dc[k] = valid ? dcn * f + (T(1) - kt) * dc_out : dc_out;
        c.h[k] = hp;  // the state before step t
        c.c[k] = cp;
      }
    }
    sparse::gather_rows(c, units, n);
    // the recurrent part of d h_{t-1}, and the open rows' part of d W_hh = d rec^T h_{t-1}
    dev.gemm(false, false, B, H, 4 * n, T(1), static_cast<const T*>(c.rec), 4 * n, static_cast<const T*>(c.w), H,
             T(1), c.dh, H);
    if (c.dw_hh) {
      dev.gemm(true, false, 4 * n, H, B, T(1), static_cast<const T*>(c.rec), 4 * n, static_cast<const T*>(c.h), H,
               T(0), c.dw, H);
      for (int q = 0; q < 4; ++q)
        for (int64_t u = 0; u < n; ++u) {
          T* dst = c.dw_hh + (q * H + units[u]) * H;
          const T* src = c.dw + (q * n + u) * H;
          for (int64_t k = 0; k < H; ++k) dst[k] += src[k];
        }
    }
  }
}

}  // namespace revrnn
