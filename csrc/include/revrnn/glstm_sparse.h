// The g-LSTM's sparse chunk (revrnn.nn.GLSTM; the dense step is revrnn/glstm.h): a unit whose time
// gate is closed (k = 0) keeps h and c exactly, and the gates depend only on t, mu and sigma, so
// each step's open units are known before it runs. Per step the open units' rows of W_hh are
// gathered, the GEMM and the LSTM update run on them alone, and their new states are written into
// h and c in place; a step with no open unit only copies the output. Nothing is kept for closed
// units: per open unit-step its activations and previous state, and the end state. Backward
// restores each previous state from the end state by writing those back, walking the chunk in
// reverse, and adds each open unit's gate rows to d W_hh.
//
// Written over the device policy like the dense loop, every per-element pass a pointwise pass, so
// that it runs on CPU and CUDA: the host reads only `offsets` (how many units are open at each
// step: the GEMMs' sizes), which must be in host memory; every other pointer is the device's.
// d k sums over the rows in a pass of its own, in row order, so the sum's bits do not depend on
// the device.
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
  const int64_t* offsets;  // (K + 1), host memory: step t's open units are units[offsets[t] .. offsets[t + 1])
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
  T* dk;                   // backward scratch (B, n): each row's part of d k
};

namespace sparse {

template <typename T>
struct Gather {  // row q n + u of w = row q H + units[u] of W_hh (rows: 4 n, columns: H)
  const T* w_hh;
  const int64_t* units;
  T* w;
  int64_t n, H;
  REVRNN_HD void operator()(int64_t row, int64_t k, bool) const {
    const int64_t q = row / n, u = row % n;
    w[row * H + k] = w_hh[(q * H + units[u]) * H + k];
  }
};

template <typename T>
struct ScatterAdd {  // row q H + units[u] of d W_hh += row q n + u of dw
  T* dw_hh;
  const T* dw;
  const int64_t* units;
  int64_t n, H;
  REVRNN_HD void operator()(int64_t row, int64_t k, bool) const {
    const int64_t q = row / n, u = row % n;
    dw_hh[(q * H + units[u]) * H + k] += dw[row * H + k];
  }
};

template <typename T>
struct Fill {  // x[b, j] = 0
  T* x;
  int64_t cols;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const { x[b * cols + j] = T(0); }
};

template <typename T>
struct Output {  // every unit's output is its state on running rows
  const T* h;
  T* y;
  int64_t H;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const { y[b * H + j] = valid ? h[b * H + j] : T(0); }
};

template <typename T>
struct AddGradY {  // d h += d y on running rows
  T* dh;
  const T* grad_y;
  int64_t H;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
    if (valid) dh[b * H + j] += grad_y[b * H + j];
  }
};

// Open unit u of step t on row b: the LSTM update blended by the time gate.
template <typename T>
struct OpenForward {
  SparseChunk<T> c;
  int64_t t, o0, n;
  REVRNN_HD void operator()(int64_t b, int64_t u, bool valid) const {
    const int64_t H = c.H, j = c.units[o0 + u], k = b * H + j;
    const T* x = c.xp + (t * c.B + b) * 4 * H + j;
    const T* r = c.rec + b * 4 * n + u;
    const T i = sigmoid(x[0] + r[0]), f = sigmoid(x[H] + r[n]), g = tanh_(x[2 * H] + r[2 * n]),
            o = sigmoid(x[3 * H] + r[3 * n]);
    T* a = c.act + ((o0 + u) * c.B + b) * 4;
    a[0] = i;
    a[1] = f;
    a[2] = g;
    a[3] = o;
    T* p = c.prev + ((o0 + u) * c.B + b) * 2;
    const T hp = c.h[k], cp = c.c[k], kt = c.gate[t * H + j];
    p[0] = hp;
    p[1] = cp;
    const T c_new = f * cp + i * g;
    c.h[k] = valid ? kt * (o * tanh_(c_new)) + (T(1) - kt) * hp : hp;
    c.c[k] = valid ? kt * c_new + (T(1) - kt) * cp : cp;
  }
};

// Its backward: d of the gathered pre-activations (rec), d xp, the row's part of d k, d h and d c
// before the step, and the state before it restored.
template <typename T>
struct OpenBackward {
  SparseChunk<T> c;
  int64_t t, o0, n;
  REVRNN_HD void operator()(int64_t b, int64_t u, bool valid) const {
    const int64_t H = c.H, j = c.units[o0 + u], k = b * H + j;
    const T* a = c.act + ((o0 + u) * c.B + b) * 4;
    const T* p = c.prev + ((o0 + u) * c.B + b) * 2;
    const T i = a[0], f = a[1], g = a[2], o = a[3], hp = p[0], cp = p[1], kt = c.gate[t * H + j];
    const T c_new = f * cp + i * g, tc = tanh_(c_new), h_new = o * tc;
    const T dh_out = c.dh[k], dc_out = c.dc[k];
    const T dhn = kt * dh_out, dcn = kt * dc_out + dhn * o * (T(1) - tc * tc);
    T* r = c.rec + b * 4 * n + u;
    r[0] = valid ? dcn * g * i * (T(1) - i) : T(0);
    r[n] = valid ? dcn * cp * f * (T(1) - f) : T(0);
    r[2 * n] = valid ? dcn * i * (T(1) - g * g) : T(0);
    r[3 * n] = valid ? dhn * tc * o * (T(1) - o) : T(0);
    T* dx = c.dxp + (t * c.B + b) * 4 * H + j;
    for (int q = 0; q < 4; ++q) dx[q * H] = r[q * n];
    c.dk[b * n + u] = valid ? dh_out * (h_new - hp) + dc_out * (c_new - cp) : T(0);
    c.dh[k] = valid ? (T(1) - kt) * dh_out : dh_out;
    c.dc[k] = valid ? dcn * f + (T(1) - kt) * dc_out : dc_out;
    c.h[k] = hp;  // the state before step t
    c.c[k] = cp;
  }
};

template <typename T>
struct SumGate {  // d k[t, units[u]] = sum over the rows, in row order
  const T* dk;
  T* dgate;  // step t's row
  const int64_t* units;
  int64_t B, n;
  REVRNN_HD void operator()(int64_t, int64_t u, bool) const {
    T s = T(0);
    for (int64_t b = 0; b < B; ++b) s += dk[b * n + u];
    dgate[units[u]] = s;
  }
};

}  // namespace sparse

template <class Device, typename T>
void glstm_sparse_forward(Device& dev, const SparseChunk<T>& c) {
  const int64_t H = c.H, B = c.B;
  for (int64_t t = 0; t < c.K; ++t) {
    const int64_t o0 = c.offsets[t], n = c.offsets[t + 1] - o0;
    const uint8_t* mask = c.mask ? c.mask + t * B : nullptr;
    if (n) {
      dev.pointwise(4 * n, Slice{0, H}, nullptr, sparse::Gather<T>{c.w_hh, c.units + o0, c.w, n, H});
      dev.gemm(false, true, B, 4 * n, H, T(1), static_cast<const T*>(c.h), H, static_cast<const T*>(c.w), H, T(0),
               c.rec, 4 * n);
      dev.pointwise(B, Slice{0, n}, mask, sparse::OpenForward<T>{c, t, o0, n});
    }
    dev.pointwise(B, Slice{0, H}, mask, sparse::Output<T>{c.h, c.y + t * B * H, H});
  }
}

template <class Device, typename T>
void glstm_sparse_backward(Device& dev, const SparseChunk<T>& c) {
  const int64_t H = c.H, B = c.B;
  for (int64_t t = c.K - 1; t >= 0; --t) {
    const int64_t o0 = c.offsets[t], n = c.offsets[t + 1] - o0;
    const uint8_t* mask = c.mask ? c.mask + t * B : nullptr;
    dev.pointwise(B, Slice{0, 4 * H}, nullptr, sparse::Fill<T>{c.dxp + t * B * 4 * H, 4 * H});
    dev.pointwise(1, Slice{0, H}, nullptr, sparse::Fill<T>{c.dgate + t * H, H});
    dev.pointwise(B, Slice{0, H}, mask, sparse::AddGradY<T>{c.dh, c.grad_y + t * B * H, H});
    if (!n) continue;
    dev.pointwise(B, Slice{0, n}, mask, sparse::OpenBackward<T>{c, t, o0, n});
    dev.pointwise(1, Slice{0, n}, nullptr, sparse::SumGate<T>{c.dk, c.dgate + t * H, c.units + o0, B, n});
    dev.pointwise(4 * n, Slice{0, H}, nullptr, sparse::Gather<T>{c.w_hh, c.units + o0, c.w, n, H});
    // the recurrent part of d h_{t-1}, and the open rows' part of d W_hh = d rec^T h_{t-1}
    dev.gemm(false, false, B, H, 4 * n, T(1), static_cast<const T*>(c.rec), 4 * n, static_cast<const T*>(c.w), H,
             T(1), c.dh, H);
    if (c.dw_hh) {
      dev.gemm(true, false, 4 * n, H, B, T(1), static_cast<const T*>(c.rec), 4 * n, static_cast<const T*>(c.h), H,
               T(0), c.dw, H);
      dev.pointwise(4 * n, Slice{0, H}, nullptr, sparse::ScatterAdd<T>{c.dw_hh, c.dw, c.units + o0, n, H});
    }
  }
}

}  // namespace revrnn
