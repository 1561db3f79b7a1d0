// What a half-update of a reversible cell sees (revrnn/revgru.h, revrnn/revlstm.h), and the
// GEMM helper both use. A reversible layer's state is two halves of G units (RevNet coupling):
// half 1 is updated from the float value of half 2, then half 2 from the new half 1. States are
// (B, H = 2G) rows, a half a view of G columns of them; the half's projection, pre-activations
// and gradients are (B, R) with R = blocks * G, gate block q in columns [q G, (q + 1) G).
//
// The forward and the reverse pass must compute bit-identical gates, so each float quantity is
// computed by one element function that both passes call in the same loop (same vectorisation,
// same rows), from operands at the same addresses; the integer steps read the results. A half's
// rows are one team member's share of the batch (revrnn/reversible.h), so it needs no barriers.
#pragma once

#include "revrnn/fixed.h"
#include "revrnn/step.h"

namespace revrnn {

template <typename T>
struct Half {
  int64_t B, G, H, R;
  int forget_bits;
  T max_forget;              // m of the restricted gate m s + (1 - m)
  const T* xp;               // (B, R), rows xs apart: the half's projected input, biases included
  int64_t xs;
  const T* w_hh;             // (R, G)
  const T* w_hh_t;           // (G, R): w_hh transposed, the form the gates' GEMMs read (row-major
                             // "nn": OpenBLAS's small-matrix kernels, no packing per call)
  const T* hb;               // (B, G), rows H apart: the float value of the other half's h
  int64_t* own[kMaxStates];  // (B, G), rows H apart: the half's fixed-point states (h first)
  T* hf;                     // (B, G), rows H apart: the float value of own[0]
  const uint8_t* mask;       // (B) rows still running, or null
  T* pre;                    // (B, R) scratch: the recurrent GEMM's output
  T* act;                    // (B, A) scratch: the float gates and update terms (A: the cell's)
  T* rh;                     // (B, G) scratch where the cell has a second GEMM (RevGRU: r * hb)
  fixed::Buffer buf;         // word == null without forgetting
  int64_t op;                // index of the half's first multiply in the buffer chunk
  // reverse only
  T* dh[kMaxStates];         // rows H apart: in, gradients of the new states; out, of the old
  T* dhb;                    // rows H apart: the other half's d h, accumulated into
  T* da;                     // (B, R): gradients of the pre-activations (zero on ended rows)
  T* drh;                    // (B, G) scratch (RevGRU: d (r * hb))

  // m s + (1 - m); without forgetting m = 1 and this is s exactly (no branch: the loops vectorise)
  REVRNN_HD T restrict(T s) const { return max_forget * s + (T(1) - max_forget); }
  REVRNN_HD Slice units() const { return {0, G}; }
};

// out[:, columns of gate blocks q0..q1] = in W[those rows]^T = in W^T[:, those columns], with in
// (B, G) rows lda apart, W^T (G, R) and out (B, R).
template <class Device, typename T>
void half_gemm(Device& dev, int q0, int q1, int64_t B, int64_t G, int64_t R, const T* in, int64_t lda, const T* w_t,
               T* out) {
  dev.gemm(false, false, B, (q1 - q0) * G, G, T(1), in, lda, w_t + q0 * G, R, T(0), out + q0 * G, R);
}

// The other half's d h += da[:, columns c0..c0 + n] W[rows c0..c0 + n]: the recurrent part of the
// chain rule through hb (run by the loop, revrnn/reversible.h).
template <class Device, typename T>
void half_grad_hb(Device& dev, const Half<T>& s, int64_t c0, int64_t n) {
  dev.gemm(false, false, s.B, s.G, n, T(1), s.da + c0, s.R, s.w_hh + c0 * s.G, s.G, T(1), s.dhb, s.H);
}

}  // namespace revrnn
