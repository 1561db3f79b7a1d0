// CUDA launchers of one step's pointwise pass for every cell the executor runs: raw device
// pointers in the executor's step structs (revrnn/step.h), a stream; they enqueue one kernel
// and never synchronise the host.
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "revrnn/step.h"

namespace revrnn {
namespace cuda {

// `phase`: 0 or 1 for a two-phase cell (revrnn/executor.h), 0 for the others.
// cudaErrorInvalidValue for an unknown cell or phase (the names are the CPU executor's).
template <typename T>
cudaError_t forward_step(const std::string& cell, int phase, int64_t B, const uint8_t* mask,
                         const StepForward<T>& s, cudaStream_t stream);
template <typename T>
cudaError_t backward_step(const std::string& cell, int phase, int64_t B, const uint8_t* mask,
                          const StepBackward<T>& s, cudaStream_t stream);

}  // namespace cuda
}  // namespace revrnn
