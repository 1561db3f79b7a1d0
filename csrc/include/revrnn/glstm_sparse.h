// The g-LSTM's sparse chunk (revrnn.nn.GLSTM; the dense step is revrnn/glstm.h): a unit whose time
// gate is closed (k = 0) keeps h and c exactly, and the gates depend only on t, mu and sigma, so
// each step's open units are known before it runs. The chunk takes the layer input x, not its
// projection: per step the open units' rows of W_ih and W_hh are gathered, and the step's GEMMs
// (x_t W_ih^T and h W_hh^T) and the LSTM update run on them alone, their new states written
// into h and c in place; a step with no open unit only copies the output. So neither the
// projection nor anything of a closed unit is computed or kept: per open unit-step its
// activations and previous state, and the end state. Backward restores each previous state from
// the end state by writing those back, walking the chunk in reverse; it writes d x per step and
// adds each open unit's gate rows to d W_ih, d W_hh and d bias.
//
// Written over the device policy like the dense loop, every per-element pass a pointwise pass, so
// that it runs on CPU and CUDA: the host reads only `offsets` (how many units are open at each
// step: the GEMMs' sizes), which must be in host memory; every other pointer is the device's.
// d k and d bias sum over the rows in a pass of their own, in row order, so the sums' bits do not
// depend on the device.
#pragma once

#include "revrnn/glstm.h"

namespace revrnn {

template <typename T>
struct SparseChunk {
  int64_t K, B, H, I;
  const T* x;              // (K, B, I) the layer input
  const T* w_ih;           // (4H, I)
  const T* bias;           // (4H) or null: the projection's bias (b_ih + b_hh)
  const T* w_hh;           // (4H, H)
  const uint8_t* mask;     // (K, B) or null
  const T* gate;           // (N) the time gates of the open unit-steps, in the order of `units`
  const int64_t* offsets;  // (K + 1), host memory: step t's open units are units[offsets[t] .. offsets[t + 1])
  const int64_t* units;    // (N) open unit indices, N = offsets[K]
  T* h;                    // (B, H): in, the chunk's start state; out, its end state (and c)
  T* c;
  T* act;                  // (N, B, 4): i, f, g, o of each open unit-step (laid out by sparse::kept)
  T* prev;                 // (N, B, 2): h and c before each open unit-step (likewise)
  T* y;                    // forward: (K, B, H)
  const T* grad_y;         // backward: (K, B, H)
  T* dh;                   // backward: (B, H) in, of the end state; out, of the start state (and dc)
  T* dc;
  T* dx;                   // backward: (K, B, I), every element written
  T* dw_ih;                // backward: (4H, I) accumulated into (zeroed by the caller), or null
  T* dbias;                // backward: (4H) likewise, or null
  T* dw_hh;                // backward: (4H, H) likewise, or null
  T* dgate;                // backward: (K, H) d k summed over the rows, every element written
  T* wi;                   // scratch (4 n, I), n the most units open at one step: the open rows of
                           // W_ih, unit-major forward, gate-major backward (Gather)
  T* wh;                   // scratch (4 n, H): those of W_hh
  T* rec;                  // scratch (B, 4 n)
  T* dw;                   // backward scratch (4 n, I + H)
  T* dk;                   // backward scratch (B, 3 n): each row's part of d k, its new d h and d c
};

namespace sparse {

// Row r of w = row q H + units[u] of a weight of `cols` columns (rows from `base`), gate-major
// (r = q n + u: the backward's order) or UnitMajor (r = 4 u + q: the forward's). A template
// argument, not a field: a select per row kept the forward's gathers from vectorising as well.
template <typename T, bool UnitMajor>
struct Gather {
  const T* weight;
  const int64_t* units;
  T* w;
  int64_t n, H, cols, base;
  REVRNN_HD void operator()(int64_t i, int64_t k, bool) const {
    const int64_t row = base + i, q = UnitMajor ? row & 3 : row / n, u = UnitMajor ? row >> 2 : row % n;
    w[row * cols + k] = weight[(q * H + units[u]) * cols + k];
  }
};

template <typename T>
struct ScatterAdd {  // row q H + units[u] of a gradient of `cols` columns += row q n + u of dw (rows from `base`)
  T* grad;
  const T* dw;
  const int64_t* units;
  int64_t n, H, cols, ld, base;  // ld: dw's row stride
  REVRNN_HD void operator()(int64_t i, int64_t k, bool) const {
    const int64_t row = base + i, q = row / n, u = row % n;
    grad[(q * H + units[u]) * cols + k] += dw[row * ld + k];
  }
};

template <typename T>
struct Fill {  // x[b, j] = 0
  T* x;
  int64_t cols;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const { x[b * cols + j] = T(0); }
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

// Where open unit u of step t (its units start at o0) on row b keeps `per` values in act (4) or
// prev (2): step by step, row-major (B, n) within a step, so that a row's units are adjacent.
REVRNN_HD int64_t kept(int64_t o0, int64_t B, int64_t n, int64_t b, int64_t u, int64_t per) {
  return (o0 * B + b * n + u) * per;
}

// Each step's per-element passes come in three: one gathers what the open units read from the
// unit-indexed tensors into step-compact buffers, one computes on those alone, and one puts
// the results back. Only the middle one has transcendentals, and without indexed loads and
// stores it vectorises.

template <typename T>
struct Output {  // a unit's h on running rows
  const T* h;
  T* y;
  int64_t H;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const { y[b * H + j] = valid ? h[b * H + j] : T(0); }
};

// In the forward, rec (B, 4 n) holds the gates of open unit u in columns 4 u .. 4 u + 3 (the
// unit-major order of Gather), so that a member's units are adjacent columns.
template <typename T>
struct Collect {  // open unit u on row b: its bias added to rec, and h and c into prev
  SparseChunk<T> c;
  int64_t o0, n, r0;  // r0: the first of the team member's rows
  REVRNN_HD void operator()(int64_t local, int64_t u, bool) const {
    const int64_t b = r0 + local, H = c.H, j = c.units[o0 + u];
    if (c.bias) {
      T* r = c.rec + b * 4 * n + 4 * u;
      for (int q = 0; q < 4; ++q) r[q] += c.bias[q * H + j];
    }
    T* p = c.prev + kept(o0, c.B, n, b, u, 2);
    p[0] = c.h[b * H + j];
    p[1] = c.c[b * H + j];
  }
};

// The LSTM update of open unit u on row b, blended by its time gate. The new h and c go to the
// first two gate slots of rec, which the same iteration has read.
template <typename T>
struct OpenForward {
  SparseChunk<T> c;
  int64_t o0, n, r0;  // r0: the first of the team member's rows
  REVRNN_HD void operator()(int64_t local, int64_t u, bool valid) const {
    const int64_t b = r0 + local;
    T* r = c.rec + b * 4 * n + 4 * u;
    const T i = sigmoid(r[0]), f = sigmoid(r[1]), g = tanh_(r[2]), o = sigmoid(r[3]);
    T* a = c.act + kept(o0, c.B, n, b, u, 4);
    a[0] = i;
    a[1] = f;
    a[2] = g;
    a[3] = o;
    const T* p = c.prev + kept(o0, c.B, n, b, u, 2);
    const T hp = p[0], cp = p[1], kt = c.gate[o0 + u];
    const T c_new = f * cp + i * g;
    r[0] = valid ? kt * (o * tanh_(c_new)) + (T(1) - kt) * hp : hp;
    r[1] = valid ? kt * c_new + (T(1) - kt) * cp : cp;
  }
};

template <typename T>
struct Place {  // h and c of open unit u on row b, from rec
  SparseChunk<T> c;
  int64_t o0, n, r0;  // r0: the first of the team member's rows
  REVRNN_HD void operator()(int64_t local, int64_t u, bool) const {
    const int64_t b = r0 + local, k = b * c.H + c.units[o0 + u];
    c.h[k] = c.rec[b * 4 * n + 4 * u];
    c.c[k] = c.rec[b * 4 * n + 4 * u + 1];
  }
};

template <typename T>
struct CollectGrad {  // d h and d c of open unit u on row b into its row of dk (d k, d h, d c; n each)
  SparseChunk<T> c;
  int64_t o0, n, r0;  // r0: the first of the team member's rows
  REVRNN_HD void operator()(int64_t local, int64_t u, bool) const {
    const int64_t b = r0 + local, k = b * c.H + c.units[o0 + u];
    T* d = c.dk + b * 3 * n + u;
    d[n] = c.dh[k];
    d[2 * n] = c.dc[k];
  }
};

// The backward of OpenForward: d of the pre-activations (rec), the row's part of d k, and d h
// and d c before the step, in place of those after it.
template <typename T>
struct OpenBackward {
  SparseChunk<T> c;
  int64_t o0, n, r0;  // r0: the first of the team member's rows
  REVRNN_HD void operator()(int64_t local, int64_t u, bool valid) const {
    const int64_t b = r0 + local;
    const T* a = c.act + kept(o0, c.B, n, b, u, 4);
    const T* p = c.prev + kept(o0, c.B, n, b, u, 2);
    const T i = a[0], f = a[1], g = a[2], o = a[3], hp = p[0], cp = p[1], kt = c.gate[o0 + u];
    const T c_new = f * cp + i * g, tc = tanh_(c_new), h_new = o * tc;
    T* d = c.dk + b * 3 * n + u;
    const T dh_out = d[n], dc_out = d[2 * n];
    const T dhn = kt * dh_out, dcn = kt * dc_out + dhn * o * (T(1) - tc * tc);
    T* r = c.rec + b * 4 * n + u;
    r[0] = valid ? dcn * g * i * (T(1) - i) : T(0);
    r[n] = valid ? dcn * cp * f * (T(1) - f) : T(0);
    r[2 * n] = valid ? dcn * i * (T(1) - g * g) : T(0);
    r[3 * n] = valid ? dhn * tc * o * (T(1) - o) : T(0);
    d[0] = valid ? dh_out * (h_new - hp) + dc_out * (c_new - cp) : T(0);
    d[n] = valid ? (T(1) - kt) * dh_out : dh_out;
    d[2 * n] = valid ? dcn * f + (T(1) - kt) * dc_out : dc_out;
  }
};

template <typename T>
struct Spread {  // d h, d c and the state before the step of open unit u on row b
  SparseChunk<T> c;
  int64_t o0, n, r0;  // r0: the first of the team member's rows
  REVRNN_HD void operator()(int64_t local, int64_t u, bool) const {
    const int64_t b = r0 + local, k = b * c.H + c.units[o0 + u];
    const T* d = c.dk + b * 3 * n + u;
    c.dh[k] = d[n];
    c.dc[k] = d[2 * n];
    const T* p = c.prev + kept(o0, c.B, n, b, u, 2);
    c.h[k] = p[0];
    c.c[k] = p[1];
  }
};

template <typename T>
struct SumRows {  // d k[t, units[u]] = sum over the rows, in row order; d bias of its gates += likewise
  const T* dk;
  const T* rec;  // d rec
  T* dgate;      // step t's row
  T* dbias;      // or null
  const int64_t* units;
  int64_t B, H, n;
  REVRNN_HD void operator()(int64_t, int64_t u, bool) const {
    T s = T(0);
    for (int64_t b = 0; b < B; ++b) s += dk[b * 3 * n + u];
    dgate[units[u]] = s;
    if (!dbias) return;
    for (int q = 0; q < 4; ++q) {
      T d = T(0);
      for (int64_t b = 0; b < B; ++b) d += rec[b * 4 * n + q * n + u];
      dbias[q * H + units[u]] += d;
    }
  }
};

}  // namespace sparse

namespace sparse {

// The part of [0, total) that goes with team member rows [r.j0, r.j1) of [0, B): the members'
// parts split it in proportion and cover it.
REVRNN_HD Slice share(int64_t total, Slice r, int64_t B) { return Slice{total * r.j0 / B, total * r.j1 / B}; }

// Multiply-adds of the chunk's recurrent GEMM per step, on average: sizes the team.
template <typename T>
int64_t work(const SparseChunk<T>& c) {
  return c.K ? 4 * c.offsets[c.K] / c.K * c.B * (c.H + c.I) : 0;
}

}  // namespace sparse

// Forward, the team splits each step's open units for the GEMMs, and the rows for the rest: a
// member gathers its units' weight rows and runs their GEMMs over every row (one GEMM over all
// B rows runs faster than two over half of them) into its columns of rec; once every member's
// are there, it updates the open units of its rows and writes their outputs. The members meet
// twice a step: when rec is complete, and when every new h is written (the next GEMMs read it).
template <class Device, typename T>
void glstm_sparse_forward(Device& dev, const SparseChunk<T>& c) {
  const int64_t H = c.H, B = c.B, I = c.I;
  dev.parallel(B, sparse::work(c), [&](Slice rows) {
    const int64_t r0 = rows.j0, m = rows.size();
    for (int64_t t = 0; t < c.K; ++t) {
      const int64_t o0 = c.offsets[t], n = c.offsets[t + 1] - o0;
      const uint8_t* mask = c.mask ? c.mask + t * B + r0 : nullptr;
      if (n) {
        const Slice own = sparse::share(n, rows, B), w{4 * own.j0, 4 * own.j1};
        if (w.size()) {
          dev.pointwise(w.size(), Slice{0, I}, nullptr, sparse::Gather<T, true>{c.w_ih, c.units + o0, c.wi, n, H, I, w.j0});
          dev.pointwise(w.size(), Slice{0, H}, nullptr, sparse::Gather<T, true>{c.w_hh, c.units + o0, c.wh, n, H, H, w.j0});
          T* rec = c.rec + w.j0;
          dev.gemm(false, true, B, w.size(), I, T(1), c.x + t * B * I, I, static_cast<const T*>(c.wi + w.j0 * I), I,
                   T(0), rec, 4 * n);
          dev.gemm(false, true, B, w.size(), H, T(1), static_cast<const T*>(c.h), H,
                   static_cast<const T*>(c.wh + w.j0 * H), H, T(1), rec, 4 * n);
        }
        dev.barrier();  // rec complete; every GEMM has read h
        dev.pointwise(m, Slice{0, n}, nullptr, sparse::Collect<T>{c, o0, n, r0});
        dev.pointwise(m, Slice{0, n}, mask, sparse::OpenForward<T>{c, o0, n, r0});
        dev.pointwise(m, Slice{0, n}, nullptr, sparse::Place<T>{c, o0, n, r0});
      }
      dev.pointwise(m, Slice{0, H}, mask, sparse::Output<T>{c.h + r0 * H, c.y + (t * B + r0) * H, H});
      if (n) dev.barrier();  // every new h written
    }
  }, 1);
}

// Backward, the team splits the rows for the per-element passes, and the columns of the GEMMs
// that sum over the open units (or the rows): those of [d x | d h] and of [d W_ih | d W_hh], a
// member's part of the I + H columns of [x | h] each (with two members and I = H, one takes the
// input's GEMMs and the other h's), over every row, gathering the weight columns they read. The
// members meet twice a step: when every row's d rec, d k and restored state are written, and
// when d h is complete.
template <class Device, typename T>
void glstm_sparse_backward(Device& dev, const SparseChunk<T>& c) {
  const int64_t H = c.H, B = c.B, I = c.I, D = I + H;  // D: dw's row stride
  dev.parallel(B, sparse::work(c), [&](Slice rows) {
    const int64_t r0 = rows.j0, m = rows.size();
    const Slice cols = sparse::share(D, rows, B);
    const Slice xc{cols.j0 < I ? cols.j0 : I, cols.j1 < I ? cols.j1 : I};              // of x
    const Slice hc{(cols.j0 > I ? cols.j0 : I) - I, (cols.j1 > I ? cols.j1 : I) - I};  // of h
    for (int64_t t = c.K - 1; t >= 0; --t) {
      const int64_t o0 = c.offsets[t], n = c.offsets[t + 1] - o0;
      const uint8_t* mask = c.mask ? c.mask + t * B + r0 : nullptr;
      dev.pointwise(1, sparse::share(H, rows, B), nullptr, sparse::Fill<T>{c.dgate + t * H, H});
      dev.pointwise(m, Slice{0, H}, mask, sparse::AddGradY<T>{c.dh + r0 * H, c.grad_y + (t * B + r0) * H, H});
      if (!n) {
        dev.pointwise(m, Slice{0, I}, nullptr, sparse::Fill<T>{c.dx + (t * B + r0) * I, I});
        continue;
      }
      dev.pointwise(m, Slice{0, n}, nullptr, sparse::CollectGrad<T>{c, o0, n, r0});
      dev.pointwise(m, Slice{0, n}, mask, sparse::OpenBackward<T>{c, o0, n, r0});
      dev.pointwise(m, Slice{0, n}, nullptr, sparse::Spread<T>{c, o0, n, r0});
      dev.pointwise(4 * n, xc, nullptr, sparse::Gather<T, false>{c.w_ih, c.units + o0, c.wi, n, H, I, 0});
      dev.pointwise(4 * n, hc, nullptr, sparse::Gather<T, false>{c.w_hh, c.units + o0, c.wh, n, H, H, 0});
      dev.barrier();  // every row's d k, d rec and restored state
      dev.pointwise(1, sparse::share(n, rows, B), nullptr,
                    sparse::SumRows<T>{c.dk, c.rec, c.dgate + t * H, c.dbias, c.units + o0, B, H, n});
      // the member's columns of d x_t and of the recurrent part of d h_{t-1}, and of the open
      // rows' parts of d W_ih = d rec^T x_t and d W_hh = d rec^T h_{t-1}
      const T* drec = c.rec;
      const T* x = c.x ? c.x + t * B * I : nullptr;
      if (xc.size()) {
        dev.gemm(false, false, B, xc.size(), 4 * n, T(1), drec, 4 * n, static_cast<const T*>(c.wi + xc.j0), I, T(0),
                 c.dx + t * B * I + xc.j0, I);
        if (c.dw_ih) {
          dev.gemm(true, false, 4 * n, xc.size(), B, T(1), drec, 4 * n, x + xc.j0, I, T(0), c.dw + xc.j0, D);
          dev.pointwise(4 * n, xc, nullptr, sparse::ScatterAdd<T>{c.dw_ih, c.dw, c.units + o0, n, H, I, D, 0});
        }
      }
      if (hc.size()) {
        dev.gemm(false, false, B, hc.size(), 4 * n, T(1), drec, 4 * n, static_cast<const T*>(c.wh + hc.j0), H, T(1),
                 c.dh + hc.j0, H);
        if (c.dw_hh) {
          dev.gemm(true, false, 4 * n, hc.size(), B, T(1), drec, 4 * n, static_cast<const T*>(c.h + hc.j0), H, T(0),
                   c.dw + I + hc.j0, D);
          dev.pointwise(4 * n, hc, nullptr, sparse::ScatterAdd<T>{c.dw_hh, c.dw + I, c.units + o0, n, H, H, D, 0});
        }
      }
      dev.barrier();  // d h complete; rec, dk and h are written again next step
    }
  }, 1);
}

}  // namespace revrnn
