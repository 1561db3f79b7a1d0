// What one step's pointwise pass sees: the pointers of step t of a chunk, for one layer and
// direction. A cell's per-element functions (revrnn/<cell>.h) read and write element (b, j) of
// these; the executor (revrnn/executor.h) fills them step by step. Row-major throughout:
// projections and gate blocks (B, G) with G = gates * H, states (B, H).
#pragma once

#include "revrnn/common.h"

namespace revrnn {

constexpr int kMaxStates = 2;

// The hidden units [j0, j1) a device thread owns.
struct Slice {
  int64_t j0, j1;
  REVRNN_HD int64_t size() const { return j1 - j0; }
  REVRNN_HD bool empty() const { return j1 <= j0; }
};

template <typename T>
struct StepForward {
  int64_t H;
  const T* xp;              // (B, Gx) the input projection of step t, biases included
  const T* rec;             // (B, G) h_{t-1} W_hh^T
  const T* b_rec;           // (G) bias added to rec, or null (the GRU's bias_hh)
  const T* prev[kMaxStates];  // states before the step
  T* next[kMaxStates];        // states after it
  T* y;                     // (B, H) the step's output
  T* act;                   // (B, A) what the backward needs (the cell says A)
  const T* aux;             // (B, H) a per-sequence operand fixed over time (a dropout mask), or null
  T* mid;                   // (B, H) two-phase cells: phase 0's output, the input of phase 1's GEMM
  const T* unit;            // (H) a per-step, per-unit operand (a time gate), or null
  const T* params;          // the cell's parameters beyond the GEMMs' (laid out by the cell), or null
};

template <typename T>
struct StepBackward {
  int64_t H;
  const T* act;             // as written by the forward
  const T* prev[kMaxStates];
  const T* next[kMaxStates];
  const T* grad_y;          // (B, H)
  T* dstate[kMaxStates];    // in: gradients of the states after the step; out: of those
                            // before it, but for the recurrent GEMM term the executor adds
  T* dxp;                   // (B, Gx) gradient of the projection
  T* drec;                  // (B, G) gradient of rec (may alias dxp)
  const T* aux;             // as in StepForward
  const T* mid;             // (B, H) two-phase cells: the forward's mid of this step
  T* dmid;                  // (B, H) two-phase cells: d mid, from phase 1's GEMM
  const T* unit;            // as in StepForward
  T* dunit;                 // (B, H) each row's part of d unit (the caller sums the rows)
  const T* params;          // as in StepForward
  T* dparams;               // their gradient in the same layout, accumulated over the chunk (zeroed
                            // by the caller)
};

// The keep-gate update of the GRU-like cells on element k: h' = z h + (1 - z) n on a valid row
// (this order: n + z (h - n) would lose h << n when z rounds to 1), h kept on an ended one; the
// output is h' or 0.
template <typename T>
REVRNN_HD void keep_gate_update(const StepForward<T>& s, int64_t k, T z, T n, bool valid) {
  const T hp = s.prev[0][k];
  const T h = z * hp + (T(1) - z) * n;
  s.next[0][k] = valid ? h : hp;
  s.y[k] = valid ? h : T(0);
}

}  // namespace revrnn
