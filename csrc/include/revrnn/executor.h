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
#pragma once

#include "revrnn/step.h"

namespace revrnn {

template <typename T>
struct ChunkForward {
  int64_t K, B, H;
  const T* xp;           // (K, B, G)
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
  T* dxp;                // (K, B, G)
  T* drec;               // (K, B, G); the same buffer as dxp where Cell::kRecIsXp
  T* dw_hh;              // (G, H), or null when the weight needs no gradient
  const T* aux;          // (B, H) or null
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

// rec[:, gate columns of the slice] = h W_hh[those rows]^T: one GEMM per gate block, or one
// for all of them when the slice is every unit.
template <class Device, typename T>
void recurrent_gemm(Device& dev, Slice u, int gates, int64_t B, int64_t H, const T* h, const T* w_hh, T* rec) {
  const int64_t G = gates * H;
  if (u.j0 == 0 && u.j1 == H) {
    dev.gemm(false, true, B, G, H, T(1), h, H, w_hh, H, T(0), rec, G);
    return;
  }
  for (int q = 0; q < gates; ++q)
    dev.gemm(false, true, B, u.size(), H, T(1), h, H, w_hh + (q * H + u.j0) * H, H, T(0), rec + q * H + u.j0, G);
}

template <class Cell, class Device, typename T>
void forward_chunk(Device& dev, const ChunkForward<T>& c) {
  const int64_t G = Cell::kGates * c.H, A = Cell::kActs * c.H, n = c.B * c.H;
  dev.parallel(c.H, c.B * G * c.H, [&](Slice u) {
    for (int64_t t = 0; t < c.K; ++t) {
      const int64_t r = c.keep ? t : t % 2, w = c.keep ? t + 1 : (t + 1) % 2;
      recurrent_gemm(dev, u, Cell::kGates, c.B, c.H, c.states[0] + r * n, c.w_hh, c.rec);
      StepForward<T> s{c.H, c.xp + t * c.B * G, c.rec, c.b_rec, {}, {}, c.y + t * n,
                       c.act + (c.keep ? t * c.B * A : 0), c.aux};
      for (int i = 0; i < Cell::kStates; ++i) {
        s.prev[i] = c.states[i] + r * n;
        s.next[i] = c.states[i] + w * n;
      }
      dev.pointwise(c.B, u, c.mask ? c.mask + t * c.B : nullptr, ForwardElement<Cell, T>{s});
      dev.barrier();  // the next step's GEMM reads every unit of h
    }
  });
}

template <class Cell, class Device, typename T>
void backward_chunk(Device& dev, const ChunkBackward<T>& c) {
  const int64_t G = Cell::kGates * c.H, A = Cell::kActs * c.H, n = c.B * c.H;
  dev.parallel(c.H, c.B * G * c.H, [&](Slice u) {
    for (int64_t t = c.K - 1; t >= 0; --t) {
      StepBackward<T> s{c.H, c.act + t * c.B * A, {}, {}, c.grad_y + t * n, {}, c.dxp + t * c.B * G,
                        c.drec + t * c.B * G, c.aux};
      for (int i = 0; i < Cell::kStates; ++i) {
        s.prev[i] = c.states[i] + t * n;
        s.next[i] = c.states[i] + (t + 1) * n;
        s.dstate[i] = c.dstate[i];
      }
      dev.pointwise(c.B, u, c.mask ? c.mask + t * c.B : nullptr, BackwardElement<Cell, T>{s});
      dev.barrier();  // the GEMM reads every column of d rec
      // the recurrent part of dh_{t-1} for the slice's units; rows that ended have d rec = 0
      // and keep their dh
      dev.gemm(false, false, c.B, u.size(), G, T(1), s.drec, G, c.w_hh + u.j0, c.H, T(1), c.dstate[0] + u.j0, c.H);
    }
    // dW_hh = sum over steps of d rec_t^T h_{t-1}, the slice's rows: (units, K B) x (K B, H)
    if (c.dw_hh)
      for (int q = 0; q < Cell::kGates; ++q)
        dev.gemm(true, false, u.size(), c.H, c.K * c.B, T(1), c.drec + q * c.H + u.j0, G, c.states[0], c.H,
                 T(0), c.dw_hh + (q * c.H + u.j0) * c.H, c.H);
  });
}

}  // namespace revrnn
