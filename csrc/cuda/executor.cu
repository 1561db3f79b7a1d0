// The executor's loops instantiated for every cell, float and double, on the CUDA policy.
#include "cuda/device.cuh"
#include "cuda/executor.h"

namespace revrnn {
namespace cuda {
namespace {

std::string not_ready() { return cublas::loaded() ? "" : "cuBLAS is not loaded (call load_cublas first)"; }

}  // namespace

const Registry& registry() { return device_registry<CudaDevice>(not_ready); }

}  // namespace cuda
}  // namespace revrnn
