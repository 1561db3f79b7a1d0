#include "cuda/step.h"

#include "cuda/device.cuh"
#include "revrnn/cells.h"
#include "revrnn/executor.h"

namespace revrnn {
namespace cuda {
namespace {

// The launch of one step's pass for the cell called `cell`: Element<Cell, T> wraps its forward or
// backward per-element function (revrnn/executor.h).
template <template <class, typename> class Element, typename T, class Step>
cudaError_t launch(const std::string& cell, int64_t B, const uint8_t* mask, const Step& s, cudaStream_t stream) {
  CudaDevice dev{stream};
#define REVRNN_CASE(name, Cell) \
  if (cell == #name) return dev.pointwise(B, s.H, mask, Element<Cell, T>{s});
  REVRNN_CELLS(REVRNN_CASE)
#undef REVRNN_CASE
  return cudaErrorInvalidValue;
}

}  // namespace

template <typename T>
cudaError_t forward_step(const std::string& cell, int64_t B, const uint8_t* mask,
                         const StepForward<T>& s, cudaStream_t stream) {
  return launch<ForwardElement, T>(cell, B, mask, s, stream);
}

template <typename T>
cudaError_t backward_step(const std::string& cell, int64_t B, const uint8_t* mask,
                          const StepBackward<T>& s, cudaStream_t stream) {
  return launch<BackwardElement, T>(cell, B, mask, s, stream);
}

template cudaError_t forward_step<float>(const std::string&, int64_t, const uint8_t*,
                                         const StepForward<float>&, cudaStream_t);
template cudaError_t forward_step<double>(const std::string&, int64_t, const uint8_t*,
                                          const StepForward<double>&, cudaStream_t);
template cudaError_t backward_step<float>(const std::string&, int64_t, const uint8_t*,
                                          const StepBackward<float>&, cudaStream_t);
template cudaError_t backward_step<double>(const std::string&, int64_t, const uint8_t*,
                                           const StepBackward<double>&, cudaStream_t);

}  // namespace cuda
}  // namespace revrnn
