// The NRU's chunk (revrnn.nn.NRU; equations and numerics in revrnn/cells/nru/spec.py). Its memory
// update reduces over each head's M slots and mixes every unit of h_t into every slot, so it
// does not fit the unit-sliced loop of revrnn/executor.h: this loop splits the batch rows among
// the team instead (rows are independent in a recurrence, so no barriers) and runs, per step
// and slice of rows, with S = [h; m] a state row of L = H + M columns and Q = 2k + 4r heads:
//   rec = S_{t-1} W_hh^T (GEMM), h_t = ReLU(xp + rec), S_t = [h_t; m_{t-1}]
//   heads = S_t W_heads^T + b (GEMM): [alpha, beta, p_alpha, q_alpha, p_beta, q_beta]
//   m_t = clamp(m_{t-1} + mean_j(alpha_j V_alpha,j - beta_j V_beta,j)), per row (nru::update)
// Backward walks the chunk in reverse from the kept states, recomputing each step's heads with
// the forward's GEMM on the same operand (so the same bits): the memory's backward per row, then
// g += d heads W_heads and g += d xp W_hh, g the running gradient of [h; m]. The weight gradients
// are one GEMM each over the chunk, left to the caller (it keeps d xp and d heads).
//
// The write and erase vectors are computed overflow-free as the spec's l5_heads: p and q divided
// by their max-abs (s_p, s_q), each head's phi(p q^T) by its own max-abs a, the L5 norm n of the
// result w against the rescaled floor eps / (s_p s_q a), V = w / d with d = max(n, floor). The
// gradients are those autograd takes through l5_heads (scales and floor detached, a tie of the
// max split in half, zero where the clamp acted).
#pragma once

#include <float.h>

#include "revrnn/step.h"

namespace revrnn {

template <typename T>
struct NruChunk {
  int64_t K, B, H, M, k, r;  // memory size M, k heads, r = sqrt(k M)
  bool relu;                 // phi = ReLU (else the identity), on the vectors and the gates
  bool clamp;                // clamp every memory slot to [-limit, limit] after each update
  T limit, eps;              // eps: the L5 normalisation's
  bool keep;                 // forward: keep every step's state (for backward)
  const T* xp;               // forward: (K, B, H), the input's projection, bias included
  const T* w_hh;             // (H, L)
  const T* w_heads;          // (Q, L)
  const T* b_heads;          // (Q) or null
  const uint8_t* mask;       // (K, B) or null: a row whose flag is 0 keeps its state, outputs 0 and
                             // passes its gradient through
  T* s;                      // (K + 1, B, L) with keep, else (2, B, L) used alternately; row 0 holds
                             // the start state on entry. Backward reads the K + 1 rows.
  T* y;                      // forward: (K, B, H)
  const T* grad_y;           // backward: (K, B, H)
  T* g;                      // backward: (B, L), in: the gradient of the end state; out: of the start
  T* dxp;                    // backward: (K, B, H)
  T* dheads;                 // backward: (K, B, Q)
  T* rec;                    // scratch: (B, H) forward, (B, L) backward (the heads' operand)
  T* heads;                  // scratch: (B, Q)
  T* work;                   // scratch: (B, nru::work_size(k, M))
};

namespace nru {

// Per row: the vectors w of both sides (2 k M), then per side s_p, s_q and per side and head a,
// n, floor, d.
REVRNN_HD constexpr int64_t work_size(int64_t k, int64_t M) { return 2 * k * M + 4 + 8 * k; }

template <typename T>
REVRNN_HD T tiny();  // the smallest normal number, the spec's torch.finfo(dtype).tiny
template <>
REVRNN_HD float tiny<float>() { return FLT_MIN; }
template <>
REVRNN_HD double tiny<double>() { return DBL_MIN; }

template <typename T>
REVRNN_HD T abs_(T x) { return x < T(0) ? -x : x; }

template <typename T>
REVRNN_HD T max_abs(const T* x, int64_t n) {  // at least tiny
  T m = tiny<T>();
  REVRNN_SIMD(reduction(max : m))
  for (int64_t i = 0; i < n; ++i) m = m > abs_(x[i]) ? m : abs_(x[i]);
  return m;
}

// One row's view of its scratch and heads.
template <typename T>
struct Row {
  const NruChunk<T>& c;
  const T* heads;  // (Q) biased
  T* work;

  REVRNN_HD int64_t Q() const { return 2 * c.k + 4 * c.r; }
  REVRNN_HD const T* p(int side) const { return heads + 2 * c.k + 2 * c.r * side; }  // q follows
  REVRNN_HD T* w(int side, int64_t j) const { return work + (side * c.k + j) * c.M; }
  REVRNN_HD T* scales(int side) const { return work + 2 * c.k * c.M + 2 * side; }  // s_p, s_q
  REVRNN_HD T* stats(int side, int64_t j) const { return work + 2 * c.k * c.M + 4 + 4 * (side * c.k + j); }
  REVRNN_HD T gate_pre(int side, int64_t j) const { return heads[side * c.k + j]; }
  REVRNN_HD T gate(int side, int64_t j) const {
    const T x = gate_pre(side, j);
    return c.relu && x < T(0) ? T(0) : x;
  }
  REVRNN_HD T coef(int side, int64_t j) const { return side == 0 ? gate(side, j) : -gate(side, j); }
};

// w and its statistics (a, n, floor, d) of both sides from the heads. The product's flat index
// f = i r + l (p's i, q's l) runs over the k heads' M slots in order, so head j is f in [jM, jM + M).
template <typename T>
REVRNN_HD void vectors(const Row<T>& row) {
  const NruChunk<T>& c = row.c;
  const int64_t r = c.r, M = c.M;
  for (int side = 0; side < 2; ++side) {
    const T* p = row.p(side);
    const T* q = p + r;
    T* sc = row.scales(side);
    const T sp = max_abs(p, r), sq = max_abs(q, r);
    sc[0] = sp;
    sc[1] = sq;
    T* v = row.w(side, 0);
    for (int64_t i = 0; i < r; ++i) {
      const T pi = p[i] / sp;
      REVRNN_SIMD()
      for (int64_t l = 0; l < r; ++l) {
        const T x = pi * (q[l] / sq);
        v[i * r + l] = c.relu && x < T(0) ? T(0) : x;
      }
    }
    for (int64_t j = 0; j < c.k; ++j) {
      T* w = row.w(side, j);
      const T a = max_abs(w, M);
      T s5 = 0;
      REVRNN_SIMD(reduction(+ : s5))
      for (int64_t m = 0; m < M; ++m) {
        const T x = w[m] / a;
        w[m] = x;
        s5 += x * x * x * x * abs_(x);
      }
      const T n = s5 > T(0) ? exp_(log_(s5) / T(5)) : T(0);
      const T floor = c.eps / sp / sq / a;  // divided in turn: 0 or inf only where the result is
      const T top = n > floor ? n : floor;
      T* st = row.stats(side, j);
      st[0] = a;
      st[1] = n;
      st[2] = floor;
      st[3] = top > tiny<T>() ? top : tiny<T>();
    }
  }
}

// out = m_prev + mean_j(alpha_j V_alpha,j - beta_j V_beta,j) before the clamp, from vectors();
// the forward and its backward (which needs it for the clamp) call this one function.
template <typename T>
REVRNN_HD void update(const Row<T>& row, const T* m_prev, T* out) {
  const NruChunk<T>& c = row.c;
  const int64_t M = c.M;
  REVRNN_SIMD()
  for (int64_t m = 0; m < M; ++m) out[m] = T(0);
  for (int64_t j = 0; j < c.k; ++j) {
    const T* wa = row.w(0, j);
    const T* wb = row.w(1, j);
    const T da = row.stats(0, j)[3], db = row.stats(1, j)[3], ga = row.gate(0, j), gb = row.gate(1, j);
    REVRNN_SIMD()
    for (int64_t m = 0; m < M; ++m) out[m] += ga * (wa[m] / da) - gb * (wb[m] / db);
  }
  REVRNN_SIMD()
  for (int64_t m = 0; m < M; ++m) out[m] = m_prev[m] + out[m] / T(c.k);
}

template <typename T>
REVRNN_HD bool inside(const NruChunk<T>& c, T x) { return x >= -c.limit && x <= c.limit; }

// m_next (M) = m_t of one row from its biased heads.
template <typename T>
REVRNN_HD void memory_forward(const Row<T>& row, const T* m_prev, T* m_next) {
  vectors(row);
  update(row, m_prev, m_next);
  if (row.c.clamp) {
    const T lim = row.c.limit;
    REVRNN_SIMD()
    for (int64_t m = 0; m < row.c.M; ++m) m_next[m] = m_next[m] < -lim ? -lim : (m_next[m] > lim ? lim : m_next[m]);
  }
}

// One row's memory backward: g (M), the gradient of m_t, becomes the direct part of m_{t-1}'s
// (zero where the clamp acted); dheads (Q) receives the gradients of every head. x: (M) scratch.
template <typename T>
REVRNN_HD void memory_backward(const Row<T>& row, const T* m_prev, T* g, T* dheads, T* x) {
  const NruChunk<T>& c = row.c;
  const int64_t M = c.M, r = c.r;
  vectors(row);
  if (c.clamp) {  // autograd's clamp passes the gradient where |x| <= limit
    update(row, m_prev, x);
    REVRNN_SIMD()
    for (int64_t m = 0; m < M; ++m) g[m] = inside(c, x[m]) ? g[m] : T(0);
  }
  const T inv_k = T(1) / T(c.k);
  for (int side = 0; side < 2; ++side)
    for (int64_t j = 0; j < c.k; ++j) {
      T* w = row.w(side, j);  // becomes d of the rescaled product
      const T* st = row.stats(side, j);
      const T a = st[0], n = st[1], floor = st[2], d = st[3], coef = row.coef(side, j);
      T dot = 0;  // sum_m (g_m / k) w_m
      REVRNN_SIMD(reduction(+ : dot))
      for (int64_t m = 0; m < M; ++m) dot += g[m] * inv_k * w[m];
      T dgate = (side == 0 ? dot : -dot) / d;
      if (c.relu && !(row.gate_pre(side, j) > T(0))) dgate = T(0);
      dheads[side * c.k + j] = dgate;
      // V = w / max(max(n, floor), tiny): d d, then through the max to n (a tie splits in half)
      const T dd = -(coef * dot) / d / d;  // not / d^2, which overflows where the floor is huge
      const T top = n > floor ? n : floor;
      const T dtop = top >= tiny<T>() ? dd : T(0);
      const T dn = n > floor ? dtop : (n == floor ? T(0.5) * dtop : T(0));
      const T scale = n != T(0) ? dn / (n * n * n * n) : T(0);  // d||w||_5/dw = w|w|^3 / ||w||^4
      REVRNN_SIMD()
      for (int64_t m = 0; m < M; ++m) {
        const T wm = w[m];
        const T dv = (coef * (g[m] * inv_k) / d + scale * (wm * wm * wm * abs_(wm))) / a;
        w[m] = c.relu && !(wm > T(0)) ? T(0) : dv;
      }
    }
  for (int side = 0; side < 2; ++side) {  // p and q from the product's gradient (r x r, f = i r + l)
    const T* p = row.p(side);
    const T* q = p + r;
    const T sp = row.scales(side)[0], sq = row.scales(side)[1];
    T* dp = dheads + 2 * c.k + 2 * r * side;
    T* dq = dp + r;
    const T* dv = row.w(side, 0);
    REVRNN_SIMD()
    for (int64_t l = 0; l < r; ++l) dq[l] = T(0);
    for (int64_t i = 0; i < r; ++i) {
      const T* dvi = dv + i * r;
      const T pi = p[i] / sp;
      T acc = 0;
      REVRNN_SIMD(reduction(+ : acc))
      for (int64_t l = 0; l < r; ++l) {
        acc += dvi[l] * (q[l] / sq);
        dq[l] += dvi[l] * pi;
      }
      dp[i] = acc / sp;
    }
    REVRNN_SIMD()
    for (int64_t l = 0; l < r; ++l) dq[l] = dq[l] / sq;
  }
}

template <typename T>
struct HiddenForward {  // h_t = ReLU(xp + rec) on a valid row, S_t's h columns, the output
  const T* xp;
  const T* rec;
  const T* prev;
  T* next;
  T* y;
  int64_t H, L;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
    const T x = xp[b * H + j] + rec[b * H + j], h = x > T(0) ? x : T(0);
    next[b * L + j] = valid ? h : prev[b * L + j];
    y[b * H + j] = valid ? h : T(0);
  }
};

template <typename T>
struct HiddenBackward {  // d xp through the ReLU; d h_{t-1} then gets only the GEMM's part
  T* g;
  const T* grad_y;
  const T* next;
  T* dxp;
  int64_t H, L;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
    const T gh = g[b * L + j], dh = gh + grad_y[b * H + j];
    dxp[b * H + j] = valid && next[b * L + j] > T(0) ? dh : T(0);
    g[b * L + j] = valid ? T(0) : gh;
  }
};

template <typename T>
struct Columns {  // dst[:, c0 + j] = src[:, c0 + j], rows of L columns
  const T* src;
  T* dst;
  int64_t L;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const { dst[b * L + j] = src[b * L + j]; }
};

template <typename T>
int64_t work(const NruChunk<T>& c) {  // multiply-adds per step
  return c.B * (c.H + 2 * c.k + 4 * c.r) * (c.H + c.M);
}

template <typename T>
struct AddBias {  // out[:, q] += bias[q]
  T* out;
  const T* bias;
  int64_t Q;
  REVRNN_HD void operator()(int64_t b, int64_t q, bool) const { out[b * Q + q] += bias[q]; }
};

// The memory update of one row (column 0 of a one-column pass) on a valid row; an ended row
// keeps its memory (already copied by the caller).
template <typename T>
struct MemoryForward {
  NruChunk<T> c;
  const T* heads;  // the slice's first row
  T* work;
  const T* prev;   // the slice's rows of S_{t-1} and S_t, L columns each
  T* next;
  REVRNN_HD void operator()(int64_t b, int64_t, bool valid) const {
    const int64_t L = c.H + c.M, Q = 2 * c.k + 4 * c.r;
    if (valid) memory_forward(Row<T>{c, heads + b * Q, work + b * work_size(c.k, c.M)}, prev + b * L + c.H,
                              next + b * L + c.H);
  }
};

// The memory update's backward of one row: d heads and g's memory columns; zero d heads on an
// ended row. u's memory columns serve as the clamp's scratch.
template <typename T>
struct MemoryBackward {
  NruChunk<T> c;
  const T* heads;
  T* work;
  const T* prev;
  T* g;
  T* dheads;
  T* u;
  REVRNN_HD void operator()(int64_t b, int64_t, bool valid) const {
    const int64_t L = c.H + c.M, Q = 2 * c.k + 4 * c.r;
    if (valid) {
      memory_backward(Row<T>{c, heads + b * Q, work + b * work_size(c.k, c.M)}, prev + b * L + c.H, g + b * L + c.H,
                      dheads + b * Q, u + b * L + c.H);
    } else {
      for (int64_t q = 0; q < Q; ++q) dheads[b * Q + q] = T(0);
    }
  }
};

// heads[rows] = in W_heads^T + b, in: the rows' [h_t; m_{t-1}]
template <class Device, typename T>
void heads(Device& dev, const NruChunk<T>& c, int64_t r0, int64_t n, const T* in) {
  const int64_t L = c.H + c.M, Q = 2 * c.k + 4 * c.r;
  T* out = c.heads + r0 * Q;
  dev.gemm(false, true, n, Q, L, T(1), in, L, c.w_heads, L, T(0), out, Q);
  if (c.b_heads) dev.pointwise(n, Slice{0, Q}, nullptr, AddBias<T>{out, c.b_heads, Q});
}

}  // namespace nru

template <class Device, typename T>
void nru_forward(Device& dev, const NruChunk<T>& c) {
  const int64_t H = c.H, L = H + c.M, Q = 2 * c.k + 4 * c.r, W = nru::work_size(c.k, c.M);
  dev.parallel(c.B, nru::work(c), [&](Slice rows) {
    const int64_t r0 = rows.j0, n = rows.size();
    for (int64_t t = 0; t < c.K; ++t) {
      const int64_t rd = c.keep ? t : t % 2, wr = c.keep ? t + 1 : (t + 1) % 2;
      const T* prev = c.s + (rd * c.B + r0) * L;
      T* next = c.s + (wr * c.B + r0) * L;
      const uint8_t* mask = c.mask ? c.mask + t * c.B + r0 : nullptr;
      dev.gemm(false, true, n, H, L, T(1), prev, L, c.w_hh, L, T(0), c.rec + r0 * H, H);
      dev.pointwise(n, Slice{0, H}, mask,
                    nru::HiddenForward<T>{c.xp + (t * c.B + r0) * H, c.rec + r0 * H, prev, next,
                                          c.y + (t * c.B + r0) * H, H, L});
      dev.pointwise(n, Slice{H, L}, nullptr, nru::Columns<T>{prev, next, L});
      nru::heads(dev, c, r0, n, static_cast<const T*>(next));
      dev.pointwise(n, Slice{0, 1}, mask,
                    nru::MemoryForward<T>{c, c.heads + r0 * Q, c.work + r0 * W, prev, next});
    }
  }, 1);  // slices of one row
}

template <class Device, typename T>
void nru_backward(Device& dev, const NruChunk<T>& c) {
  const int64_t H = c.H, L = H + c.M, Q = 2 * c.k + 4 * c.r, W = nru::work_size(c.k, c.M);
  dev.parallel(c.B, nru::work(c), [&](Slice rows) {
    const int64_t r0 = rows.j0, n = rows.size();
    T* g = c.g + r0 * L;
    T* u = c.rec + r0 * L;
    for (int64_t t = c.K - 1; t >= 0; --t) {
      const T* prev = c.s + (t * c.B + r0) * L;
      const T* next = c.s + ((t + 1) * c.B + r0) * L;
      const uint8_t* mask = c.mask ? c.mask + t * c.B + r0 : nullptr;
      T* dheads = c.dheads + (t * c.B + r0) * Q;
      T* dxp = c.dxp + (t * c.B + r0) * H;
      // u = [h_t; m_{t-1}], the forward's S_t before its memory update: the same GEMM operand
      dev.pointwise(n, Slice{0, H}, nullptr, nru::Columns<T>{next, u, L});
      dev.pointwise(n, Slice{H, L}, nullptr, nru::Columns<T>{prev, u, L});
      nru::heads(dev, c, r0, n, static_cast<const T*>(u));
      dev.pointwise(n, Slice{0, 1}, mask,
                    nru::MemoryBackward<T>{c, c.heads + r0 * Q, c.work + r0 * W, prev, g, dheads, u});
      dev.gemm(false, false, n, L, Q, T(1), static_cast<const T*>(dheads), Q, c.w_heads, L, T(1), g, L);
      dev.pointwise(n, Slice{0, H}, mask, nru::HiddenBackward<T>{g, c.grad_y + (t * c.B + r0) * H, next, dxp, H, L});
      dev.gemm(false, false, n, L, H, T(1), static_cast<const T*>(dxp), H, c.w_hh, L, T(1), g, L);
    }
  }, 1);  // slices of one row
}

}  // namespace revrnn
