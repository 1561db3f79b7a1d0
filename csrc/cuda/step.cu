#include "cuda/step.h"

#include "cuda/device.cuh"
#include "revrnn/cells.h"
#include "revrnn/executor.h"

namespace revrnn {
namespace cuda {
namespace {

// The launch of one step's pass for the cell called `cell`: Last<Cell, T> wraps its forward or
// backward per-element function, Gates<Cell, T> that of a two-phase cell's phase 0
// (revrnn/executor.h). cudaErrorInvalidValue for an unknown cell or phase.
template <template <class, typename> class Last, template <class, typename> class Gates, typename T, class Step>
cudaError_t launch(const std::string& cell, int phase, int64_t B, const uint8_t* mask, const Step& s,
                   cudaStream_t stream) {
  CudaDevice dev{stream};
#define REVRNN_CASE(name, Cell)                                                        \
  if (cell == #name) {                                                                 \
    if (phase == Cell::kPhases - 1) return dev.pointwise(B, s.H, mask, Last<Cell, T>{s}); \
    if constexpr (Cell::kPhases == 2)                                                   \
      if (phase == 0) return dev.pointwise(B, s.H, mask, Gates<Cell, T>{s});            \
    return cudaErrorInvalidValue;                                                       \
  }
  REVRNN_CELLS(REVRNN_CASE)
#undef REVRNN_CASE
  return cudaErrorInvalidValue;
}

}  // namespace

template <typename T>
cudaError_t forward_step(const std::string& cell, int phase, int64_t B, const uint8_t* mask,
                         const StepForward<T>& s, cudaStream_t stream) {
  return launch<ForwardElement, ForwardGates, T>(cell, phase, B, mask, s, stream);
}

template <typename T>
cudaError_t backward_step(const std::string& cell, int phase, int64_t B, const uint8_t* mask,
                          const StepBackward<T>& s, cudaStream_t stream) {
  return launch<BackwardElement, BackwardGates, T>(cell, phase, B, mask, s, stream);
}

template cudaError_t forward_step<float>(const std::string&, int, int64_t, const uint8_t*,
                                         const StepForward<float>&, cudaStream_t);
template cudaError_t forward_step<double>(const std::string&, int, int64_t, const uint8_t*,
                                          const StepForward<double>&, cudaStream_t);
template cudaError_t backward_step<float>(const std::string&, int, int64_t, const uint8_t*,
                                          const StepBackward<float>&, cudaStream_t);
template cudaError_t backward_step<double>(const std::string&, int, int64_t, const uint8_t*,
                                           const StepBackward<double>&, cudaStream_t);

}  // namespace cuda
}  // namespace revrnn
