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

// rec[:, columns c0 + gate blocks q0..q1 of the slice] = in W[those rows]^T, in: (B, H), W: the
// rows of W_hh from c0 on; one GEMM for all of them when the slice is every unit.
template <class Device, typename T>
void recurrent_gemm(Device& dev, Slice u, int q0, int q1, int64_t B, int64_t H, int64_t G, const T* in,
                    const T* w_hh, T* rec) {
  if (u.j0 == 0 && u.j1 == H) {
    dev.gemm(false, true, B, (q1 - q0) * H, H, T(1), in, H, w_hh + q0 * H * H, H, T(0), rec + q0 * H, G);
    return;
  }
  for (int q = q0; q < q1; ++q)
    dev.gemm(false, true, B, u.size(), H, T(1), in, H, w_hh + (q * H + u.j0) * H, H, T(0), rec + q * H + u.j0, G);
}

// dW[rows of gate blocks q0..q1 of the slice] = sum over the chunk of d rec^T in: (units, K B) x (K B, H)
template <class Device, typename T>
void weight_gemm(Device& dev, Slice u, int q0, int q1, int64_t KB, int64_t H, int64_t G, const T* drec,
                 const T* in, T* dw) {
  for (int q = q0; q < q1; ++q)
    dev.gemm(true, false, u.size(), H, KB, T(1), drec + q * H + u.j0, G, in, H, T(0), dw + (q * H + u.j0) * H, H);
}

template <class Cell, class Device, typename T>
void forward_chunk(Device& dev, const ChunkForward<T>& c) {
  constexpr int gates = Cell::kGates, phase0 = Cell::kPhases == 2 ? Cell::kGates - 1 : Cell::kGates;
  const int64_t G = gates * c.H, Gx = Cell::kXpGates * c.H, A = Cell::kActs * c.H, n = c.B * c.H;
  constexpr bool feedback = HasFeedback<Cell>::value;
  dev.parallel(c.H, c.B * G * c.H, [&](Slice u) {
    if constexpr (feedback) {
      dev.pointwise(c.B, u, nullptr, FeedbackElement<Cell, T>{c.states[0], c.fb, c.H});
      dev.barrier();
    }
    for (int64_t t = 0; t < c.K; ++t) {
      const int64_t r = c.keep ? t : t % 2, w = c.keep ? t + 1 : (t + 1) % 2;
      StepForward<T> s{c.H, c.xp + t * c.B * Gx, c.rec, c.b_rec, {}, {}, c.y + t * n,
                       c.act + (c.keep ? t * c.B * A : 0), c.aux, c.mid ? c.mid + (c.keep ? t * n : 0) : nullptr,
                       c.unit ? c.unit + t * c.H : nullptr};
      for (int i = 0; i < Cell::kStates; ++i) {
        s.prev[i] = c.states[i] + r * n;
        s.next[i] = c.states[i] + w * n;
      }
      const uint8_t* mask = c.mask ? c.mask + t * c.B : nullptr;
      const T* in = s.prev[0];
      if constexpr (feedback) in = c.fb + r * n;
      recurrent_gemm(dev, u, 0, phase0, c.B, c.H, G, in, c.w_hh, c.rec);
      if constexpr (Cell::kPhases == 2) {
        dev.pointwise(c.B, u, mask, ForwardGates<Cell, T>{s});
        dev.barrier();  // phase 1's GEMM reads every unit of mid
        recurrent_gemm(dev, u, phase0, gates, c.B, c.H, G, static_cast<const T*>(s.mid), c.w_hh, c.rec);
      }
      dev.pointwise(c.B, u, mask, ForwardElement<Cell, T>{s});
      if constexpr (feedback) dev.pointwise(c.B, u, nullptr, FeedbackElement<Cell, T>{s.next[0], c.fb + w * n, c.H});
      dev.barrier();  // the next step's GEMM reads every unit of h
    }
  });
}

template <class Cell, class Device, typename T>
void backward_chunk(Device& dev, const ChunkBackward<T>& c) {
  constexpr int gates = Cell::kGates, phase0 = Cell::kPhases == 2 ? Cell::kGates - 1 : Cell::kGates;
  const int64_t G = gates * c.H, G0 = phase0 * c.H, Gx = Cell::kXpGates * c.H, A = Cell::kActs * c.H,
                n = c.B * c.H;
  constexpr bool feedback = HasFeedback<Cell>::value;
  dev.parallel(c.H, c.B * G * c.H, [&](Slice u) {
    for (int64_t t = c.K - 1; t >= 0; --t) {
      StepBackward<T> s{c.H, c.act + t * c.B * A, {}, {}, c.grad_y + t * n, {}, c.dxp + t * c.B * Gx,
                        c.drec + t * c.B * G, c.aux, c.mid ? c.mid + t * n : nullptr, c.dmid,
                        c.unit ? c.unit + t * c.H : nullptr, c.dunit ? c.dunit + t * n : nullptr};
      for (int i = 0; i < Cell::kStates; ++i) {
        s.prev[i] = c.states[i] + t * n;
        s.next[i] = c.states[i] + (t + 1) * n;
        s.dstate[i] = c.dstate[i];
      }
      const uint8_t* mask = c.mask ? c.mask + t * c.B : nullptr;
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
        dev.gemm(false, false, c.B, u.size(), G0, T(1), s.drec, G, c.w_hh + u.j0, c.H, T(1), c.dstate[0] + u.j0,
                 c.H);
      }
    }
    if (c.dw_hh) {
      const T* in = c.states[0];
      if constexpr (feedback) in = c.fb;
      weight_gemm(dev, u, 0, phase0, c.K * c.B, c.H, G, c.drec, in, c.dw_hh);
      if constexpr (Cell::kPhases == 2) weight_gemm(dev, u, phase0, gates, c.K * c.B, c.H, G, c.drec, c.mid, c.dw_hh);
    }
  });
}

}  // namespace revrnn
