// The executor's loops instantiated for every cell, float and double, on the CPU policy.
#include "cpu/executor.h"

#include "cpu/blas.h"
#include "cpu/device.h"

namespace revrnn {
namespace cpu {
namespace {

std::string not_ready() { return blas_loaded() ? "" : "no BLAS loaded (call load_blas first)"; }

}  // namespace

const Registry& registry() { return device_registry<CpuDevice>(not_ready); }

}  // namespace cpu
}  // namespace revrnn
