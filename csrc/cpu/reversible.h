// The per-operation form of the reversible cells' integer core on the CPU (the chunk loop is in
// the registry, csrc/cpu/executor.h). Framework-free: pointers and sizes only.
#pragma once

#include "revrnn/fixed.h"

namespace revrnn {
namespace cpu {

// One exact multiply (forward) or divide of every element of (rows, G) states through the
// buffer, as the reversible loop runs them: the per-operation form of the integer core. h and out
// may alias; q may be null (no update); active (rows) may be null (every row).
void exact_elements(bool forward, int64_t rows, int64_t G, const int64_t* h, const int64_t* n, const int64_t* q,
                    const uint8_t* active, int64_t* out, const fixed::Buffer& buf, int64_t op);

}  // namespace cpu
}  // namespace revrnn
