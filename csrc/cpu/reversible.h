// The CPU entry points of the reversible stacks' loop (revrnn/reversible.h): a cell by name, a
// dtype, one chunk's buffers. Framework-free: pointers and sizes only.
#pragma once

#include <string>

#include "revrnn/reversible.h"

namespace revrnn {
namespace cpu {

struct RevEntry {
  const char* name;
  int states, blocks, multiplies, acts;  // state tensors; gate blocks and exact multiplies of a
                                         // half-update; act columns in units of G
  bool reset;                            // a second GEMM on r * hb (RevLayer::rh is recorded)
  void (*forward_f32)(int threads, const RevChunk<float>&);
  void (*forward_f64)(int threads, const RevChunk<double>&);
  void (*backward_f32)(int threads, const RevChunk<float>&);
  void (*backward_f64)(int threads, const RevChunk<double>&);
};

const RevEntry* find_reversible(const std::string& name);
std::string reversible_names();

// One exact multiply (forward) or divide of every element of (rows, G) states through the
// buffer, as the reversible loop runs them: the per-operation form of the integer core. h and out
// may alias; q may be null (no update); active (rows) may be null (every row).
void exact_elements(bool forward, int64_t rows, int64_t G, const int64_t* h, const int64_t* n, const int64_t* q,
                    const uint8_t* active, int64_t* out, const fixed::Buffer& buf, int64_t op);

}  // namespace cpu
}  // namespace revrnn
