// The CUDA executor's entry points: the registry of every cell (revrnn/registry.h) on the CUDA
// device policy (csrc/cuda/device.cuh). Host code may include this without CUDA headers.
#pragma once

#include "revrnn/registry.h"

namespace revrnn {
namespace cuda {

// Every cell of revrnn/cells.h, float and double, on CUDA; ready once cuBLAS is loaded.
const Registry& registry();

}  // namespace cuda
}  // namespace revrnn
