// Argument checks shared by the pybind11 modules (_C and, with REVRNN_CUDA, _C_cuda).
//
// Tensors cross the boundary as raw addresses (Python ints from tensor.data_ptr()) plus sizes
// and a dtype flag, so the extensions never link against a framework. The Python caller checks
// shapes, dtypes, devices and contiguity; here we only refuse what would crash: null or
// misaligned pointers and negative sizes. Errors become ValueError naming the argument.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "revrnn/step.h"

namespace revrnn {
namespace bindings {

enum class DType { float32, float64 };

// module_local: each module owns its enum, so _C and _C_cuda can be imported together.
inline void add_dtype(pybind11::module_& m) {
  pybind11::enum_<DType>(m, "DType", pybind11::module_local(),
                         "Element type of every tensor argument of a call.")
      .value("float32", DType::float32)
      .value("float64", DType::float64);
}

template <typename T>
T* pointer(const char* fn, const char* name, std::uintptr_t address, bool optional = false) {
  if (address == 0 && !optional)
    throw std::invalid_argument(std::string(fn) + ": argument '" + name + "' is a null pointer");
  if (address % alignof(T) != 0)
    throw std::invalid_argument(std::string(fn) + ": argument '" + name + "' is not aligned to " +
                                std::to_string(alignof(T)) + " bytes");
  return reinterpret_cast<T*>(address);
}

inline void check_sizes(const char* fn, int64_t B, int64_t H) {
  if (B < 0 || H < 0)
    throw std::invalid_argument(std::string(fn) + ": sizes must be >= 0, got B=" +
                                std::to_string(B) + ", H=" + std::to_string(H));
}

// A cell's state tensors, one address each, into the executor's fixed-size array.
template <typename P>
void states(const char* fn, const char* name, const std::vector<std::uintptr_t>& addresses, P (&out)[kMaxStates]) {
  if (addresses.empty() || addresses.size() > std::size_t(kMaxStates))
    throw std::invalid_argument(std::string(fn) + ": argument '" + name + "' must list 1 to " +
                                std::to_string(kMaxStates) + " addresses, got " +
                                std::to_string(addresses.size()));
  for (std::size_t i = 0; i < addresses.size(); ++i)
    out[i] = pointer<std::remove_pointer_t<P>>(fn, name, addresses[i]);
}

}  // namespace bindings
}  // namespace revrnn
