// The CPU executor's entry point: the registry of every cell (revrnn/registry.h) on the CPU device
// policy. Framework-free: pointers and sizes only.
#pragma once

#include "revrnn/registry.h"

namespace revrnn {
namespace cpu {

// Every cell of revrnn/cells.h, float and double, on the CPU; ready once a BLAS is loaded.
const Registry& registry();

}  // namespace cpu
}  // namespace revrnn
