// The time loop of one chunk, written once for every cell and every device. Per step: the
// recurrent GEMM through the device's BLAS, then one fused pointwise pass (the cell's
// per-element function over B x H elements). Backward mirrors it in reverse and computes the
// recurrent weight's gradient with one GEMM per gate block over the whole chunk.
//
// The device runs the loop on a team (CPU: OpenMP threads; CUDA: the host thread alone), each
// member owning a slice of the hidden units for the whole chunk; it provides
//   parallel(H, work, body)   body(Slice) on every member
//   barrier()                 every member got here (CUDA: stream order makes it a no-op)
//   gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)   row-major, as BLAS
//   pointwise(B, slice, mask_or_null, f)   f(b, j, valid) for the slice's elements
// (csrc/cpu/device.h; csrc/cuda/device.cuh). Nothing here allocates: the caller hands in
// every buffer.
//
// Two-phase cells (Cell::kPhases == 2: the reset-before gated units) have a second, dependent
// GEMM per step: phase 0 runs the gates from rec[:, :G0] = h W_0^T (W_0: the first G0 rows of
// W_hh) and writes mid = (reset gate) h; phase 1 runs the candidate from rec[:, G0:] = mid W_1^T
// (W_1: the last H rows). Backward: phase 1, then d mid = d rec[:, G0:] W_1, then phase 0.
//
// Projected cells (Cell::kProj: the LSTM with proj_size P) write mid = o tanh(c) instead of h;
// the executor then computes h = mid W_hr^T (P columns; the recurrent GEMM reads h, so its inner
// size is P) and, in backward, d mid = d h W_hr before the cell's backward and d W_hr over the
// chunk. A thread owns the projection's columns [j0 P / H, j1 P / H) for its units [j0, j1).
#pragma once

#include <type_traits>

#include "revrnn/step.h"

namespace revrnn {

template <typename T>
struct ChunkForward {
  int64_t K, B, H;
  const T* xp;           // (K, B, Gx): Gx = Cell::kXpGates H, the projection's columns
  const T* w_hh;         // (G, H): rec = h W_hh^T
  const T* b_rec;        // (G) or null
  const uint8_t* mask;   // (K, B) or null
  T* states[kMaxStates];  // each (K + 1, B, H) with keep, else (2, B, H) used alternately; row 0
                          // holds the initial state on entry
  T* act;                // (K, B, A) with keep, else (B, A)
  T* y;                  // (K, B, H)
  T* rec;                // (B, G) scratch
  bool keep;
  const T* aux;          // (B, H) or null: StepForward::aux
  T* mid;                // two-phase cells: (K, B, H) with keep, else (B, H)
  const T* unit;         // (K, H) or null: StepForward::unit
  T* fb;                 // feedback cells: g(h), laid out as states[0], the recurrent GEMM's input
  int64_t P;             // projected cells: h's size (states[0] and y are (., B, P)); else H
  const T* w_hr;         // projected cells: (P, H)
  const T* params;       // or null: StepForward::params
};

template <typename T>
struct ChunkBackward {
  int64_t K, B, H;
  const T* w_hh;         // (G, H)
  const uint8_t* mask;   // (K, B) or null
  const T* act;          // (K, B, A) from the forward with keep
  const T* states[kMaxStates];  // (K + 1, B, H) each
  const T* grad_y;       // (K, B, H)
  T* dstate[kMaxStates];  // (B, H): in, gradients of the end state; out, of the initial one
  T* dxp;                // (K, B, Gx)
  T* drec;               // (K, B, G); the same buffer as dxp where Cell::kRecIsXp
  T* dw_hh;              // (G, H), or null when the weight needs no gradient
  const T* aux;          // (B, H) or null
  const T* mid;          // two-phase cells: (K, B, H) from the forward with keep
  T* dmid;               // two-phase cells: (B, H) scratch
  const T* unit;         // (K, H) or null
  T* dunit;              // (K, B, H) where unit is given: StepBackward::dunit
  const T* fb;           // feedback cells: (K + 1, B, H) from the forward with keep
  T* dfb;                // feedback cells: (B, H) scratch
  int64_t P;             // as in ChunkForward
  const T* w_hr;         // projected cells: (P, H)
  T* dproj;              // projected cells: (K, B, P), d h of every step (for d W_hr)
  T* dw_hr;              // projected cells: (P, H), or null when it needs no gradient
  const T* params;       // or null: StepForward::params
  T* dparams;            // where params is given: StepBackward::dparams
};

// Cell::kFeedback where the cell declares it: its recurrent GEMM reads g(h) = Cell::feedback(h)
// instead of h (the forward keeps g(h) beside the states; backward chains d g through g').
template <class Cell, class = void>
struct HasFeedback : std::false_type {};
template <class Cell>
struct HasFeedback<Cell, std::void_t<decltype(Cell::kFeedback)>> : std::bool_constant<Cell::kFeedback> {};

template <class Cell, typename T>
struct FeedbackElement {  // fb = g(h)
  const T* h;
  T* fb;
  int64_t H;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const { fb[b * H + j] = Cell::feedback(h[b * H + j]); }
};

template <class Cell, typename T>
struct ChainFeedback {  // dh += d g(h) g'(h)
  const T* h;
  const T* dfb;
  T* dh;
  int64_t H;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
    const int64_t k = b * H + j;
    dh[k] += dfb[k] * Cell::dfeedback(h[k]);
  }
};

// Cell::kProj where the cell declares it (see the top of this file).
template <class Cell, class = void>
struct HasProj : std::false_type {};
template <class Cell>
struct HasProj<Cell, std::void_t<decltype(Cell::kProj)>> : std::bool_constant<Cell::kProj> {};

// The projection's columns a thread owns for its units.
inline Slice proj_slice(Slice u, int64_t H, int64_t P) { return {u.j0 * P / H, u.j1 * P / H}; }

template <typename T>
struct ProjOutput {  // the projected h on a valid row (GEMM output), kept on an ended one; y
  const T* prev;
  T* next;
  T* y;
  int64_t P;
  REVRNN_HD void operator()(int64_t b, int64_t k, bool valid) const {
    const int64_t i = b * P + k;
    next[i] = valid ? next[i] : prev[i];
    y[i] = valid ? next[i] : T(0);
  }
};

template <typename T>
struct ProjGrad {  // d h of a valid row (0 on an ended one, whose d h passes to the step before)
  T* dh;
  const T* grad_y;
  T* dproj;
  int64_t P;
  REVRNN_HD void operator()(int64_t b, int64_t k, bool valid) const {
    const int64_t i = b * P + k;
    dproj[i] = valid ? dh[i] + grad_y[i] : T(0);
    dh[i] = valid ? T(0) : dh[i];  // the executor adds d rec W_hh
  }
};

// Adapters from the executor's pointwise call to a cell's per-element functions.
template <class Cell, typename T>
struct ForwardElement {
  StepForward<T> s;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const { Cell::forward(s, b, j, valid); }
};

template <class Cell, typename T>
struct BackwardElement {
  StepBackward<T> s;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const { Cell::backward(s, b, j, valid); }
};

// Phase 0 of a two-phase cell (phase 1 is the cell's forward/backward above).
template <class Cell, typename T>
struct ForwardGates {
  StepForward<T> s;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const { Cell::forward_gates(s, b, j, valid); }
};

template <class Cell, typename T>
struct BackwardGates {
  StepBackward<T> s;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const { Cell::backward_gates(s, b, j, valid); }
};

// rec[:, columns c0 + gate blocks q0..q1 of the slice] = in W[those rows]^T, in: (B, N), W: the
// rows of W_hh from c0 on, N columns (N = H, or P for projected cells); one GEMM for all of them
// when the slice is every unit.
template <class Device, typename T>
void recurrent_gemm(Device& dev, Slice u, int q0, int q1, int64_t B, int64_t H, int64_t G, const T* in,
                    const T* w_hh, T* rec, int64_t N) {
  if (u.j0 == 0 && u.j1 == H) {
    dev.gemm(false, true, B, (q1 - q0) * H, N, T(1), in, N, w_hh + q0 * H * N, N, T(0), rec + q0 * H, G);
    return;
  }
  for (int q = q0; q < q1; ++q)
    dev.gemm(false, true, B, u.size(), N, T(1), in, N, w_hh + (q * H + u.j0) * N, N, T(0), rec + q * H + u.j0, G);
}

// dW[rows of gate blocks q0..q1 of the slice] = sum over the chunk of d rec^T in: (units, K B) x (K B, N)
template <class Device, typename T>
void weight_gemm(Device& dev, Slice u, int q0, int q1, int64_t KB, int64_t H, int64_t G, const T* drec,
                 const T* in, T* dw, int64_t N) {
  for (int q = q0; q < q1; ++q)
    dev.gemm(true, false, u.size(), N, KB, T(1), drec + q * H + u.j0, G, in, N, T(0), dw + (q * H + u.j0) * N, N);
}

template <class Cell, class Device, typename T>
void forward_chunk(Device& dev, const ChunkForward<T>& c) {
  constexpr int gates = Cell::kGates, phase0 = Cell::kPhases == 2 ? Cell::kGates - 1 : Cell::kGates;
  const int64_t G = gates * c.H, Gx = Cell::kXpGates * c.H, A = Cell::kActs * c.H, n = c.B * c.H;
  constexpr bool feedback = HasFeedback<Cell>::value, proj = HasProj<Cell>::value;
  const int64_t P = proj ? c.P : c.H, np = c.B * P;  // h's size
  dev.parallel(c.H, c.B * G * P, [&](Slice u) {
    if constexpr (feedback) {
      dev.pointwise(c.B, u, nullptr, FeedbackElement<Cell, T>{c.states[0], c.fb, c.H});
      dev.barrier();
    }
    for (int64_t t = 0; t < c.K; ++t) {
      const int64_t r = c.keep ? t : t % 2, w = c.keep ? t + 1 : (t + 1) % 2;
      StepForward<T> s{c.H, c.xp + t * c.B * Gx, c.rec, c.b_rec, {}, {}, c.y + t * np,
                       c.act + (c.keep ? t * c.B * A : 0), c.aux, c.mid ? c.mid + (c.keep ? t * n : 0) : nullptr,
                       c.unit ? c.unit + t * c.H : nullptr, c.params};
      for (int i = 0; i < Cell::kStates; ++i) {
        const int64_t size = i == 0 ? np : n;
        s.prev[i] = c.states[i] + r * size;
        s.next[i] = c.states[i] + w * size;
      }
      const uint8_t* mask = c.mask ? c.mask + t * c.B : nullptr;
      const T* in = s.prev[0];
      if constexpr (feedback) in = c.fb + r * n;
      recurrent_gemm(dev, u, 0, phase0, c.B, c.H, G, in, c.w_hh, c.rec, P);
      if constexpr (Cell::kPhases == 2) {
        dev.pointwise(c.B, u, mask, ForwardGates<Cell, T>{s});
        dev.barrier();  // phase 1's GEMM reads every unit of mid
        recurrent_gemm(dev, u, phase0, gates, c.B, c.H, G, static_cast<const T*>(s.mid), c.w_hh, c.rec, c.H);
      }
      dev.pointwise(c.B, u, mask, ForwardElement<Cell, T>{s});
      if constexpr (feedback) dev.pointwise(c.B, u, nullptr, FeedbackElement<Cell, T>{s.next[0], c.fb + w * n, c.H});
      if constexpr (proj) {
        dev.barrier();  // the projection reads every unit of mid
        const Slice v = proj_slice(u, c.H, P);
        dev.gemm(false, true, c.B, v.size(), c.H, T(1), static_cast<const T*>(s.mid), c.H, c.w_hr + v.j0 * c.H, c.H,
                 T(0), s.next[0] + v.j0, P);
        dev.pointwise(c.B, v, mask, ProjOutput<T>{s.prev[0], s.next[0], s.y, P});
      }
      dev.barrier();  // the next step's GEMM reads every unit of h
    }
  });
}

template <class Cell, class Device, typename T>
void backward_chunk(Device& dev, const ChunkBackward<T>& c) {
  constexpr int gates = Cell::kGates, phase0 = Cell::kPhases == 2 ? Cell::kGates - 1 : Cell::kGates;
  const int64_t G = gates * c.H, G0 = phase0 * c.H, Gx = Cell::kXpGates * c.H, A = Cell::kActs * c.H,
                n = c.B * c.H;
  constexpr bool feedback = HasFeedback<Cell>::value, proj = HasProj<Cell>::value;
  const int64_t P = proj ? c.P : c.H, np = c.B * P;
  dev.parallel(c.H, c.B * G * P, [&](Slice u) {
    const Slice v = proj ? proj_slice(u, c.H, P) : u;  // the slice of h's columns
    for (int64_t t = c.K - 1; t >= 0; --t) {
      StepBackward<T> s{c.H, c.act + t * c.B * A, {}, {}, c.grad_y + t * np, {}, c.dxp + t * c.B * Gx,
                        c.drec + t * c.B * G, c.aux, c.mid ? c.mid + t * n : nullptr, c.dmid,
                        c.unit ? c.unit + t * c.H : nullptr, c.dunit ? c.dunit + t * n : nullptr, c.params,
                        c.dparams};
      for (int i = 0; i < Cell::kStates; ++i) {
        const int64_t size = i == 0 ? np : n;
        s.prev[i] = c.states[i] + t * size;
        s.next[i] = c.states[i] + (t + 1) * size;
        s.dstate[i] = c.dstate[i];
      }
      const uint8_t* mask = c.mask ? c.mask + t * c.B : nullptr;
      if constexpr (proj) {
        T* dproj = c.dproj + t * np;
        dev.pointwise(c.B, v, mask, ProjGrad<T>{c.dstate[0], s.grad_y, dproj, P});
        dev.barrier();  // d mid reads every column of d h
        dev.gemm(false, false, c.B, u.size(), P, T(1), static_cast<const T*>(dproj), P, c.w_hr + u.j0, c.H, T(0),
                 c.dmid + u.j0, c.H);
      }
      dev.pointwise(c.B, u, mask, BackwardElement<Cell, T>{s});
      if constexpr (Cell::kPhases == 2) {
        dev.barrier();  // the GEMM reads every column of d rec's candidate block
        dev.gemm(false, false, c.B, u.size(), c.H, T(1), s.drec + G0, G, c.w_hh + G0 * c.H + u.j0, c.H, T(0),
                 c.dmid + u.j0, c.H);
        dev.pointwise(c.B, u, mask, BackwardGates<Cell, T>{s});
      }
      dev.barrier();  // the GEMM reads every column of d rec's gate blocks
      // the recurrent part of dh_{t-1} for the slice's units; rows that ended have d rec = 0
      // and keep their dh
      if constexpr (feedback) {
        dev.gemm(false, false, c.B, u.size(), G0, T(1), s.drec, G, c.w_hh + u.j0, c.H, T(0), c.dfb + u.j0, c.H);
        dev.pointwise(c.B, u, nullptr, ChainFeedback<Cell, T>{s.prev[0], c.dfb, c.dstate[0], c.H});
      } else {
        dev.gemm(false, false, c.B, v.size(), G0, T(1), s.drec, G, c.w_hh + v.j0, P, T(1), c.dstate[0] + v.j0, P);
      }
    }
    if (c.dw_hh) {
      const T* in = c.states[0];
      if constexpr (feedback) in = c.fb;
      weight_gemm(dev, u, 0, phase0, c.K * c.B, c.H, G, c.drec, in, c.dw_hh, P);
      if constexpr (Cell::kPhases == 2)
        weight_gemm(dev, u, phase0, gates, c.K * c.B, c.H, G, c.drec, c.mid, c.dw_hh, c.H);
    }
    if constexpr (proj) {  // d W_hr = sum over the chunk of d h^T mid, the slice's rows
      if (c.dw_hr)
        dev.gemm(true, false, v.size(), c.H, c.K * c.B, T(1), static_cast<const T*>(c.dproj + v.j0), P, c.mid, c.H,
                 T(0), c.dw_hr + v.j0 * c.H, c.H);
    }
  });
}

}  // namespace revrnn
