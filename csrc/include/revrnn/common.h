// Shared definitions of the framework-free core: host+device qualifiers and the math overloads
// that resolve to the same float/double functions on the host and on the device.
#pragma once

#include <math.h>

#ifdef __CUDACC__
#define REVRNN_HD __host__ __device__ __forceinline__
#else
#define REVRNN_HD inline
#endif

namespace revrnn {

// Explicit overloads instead of std:: calls so that float stays float on both sides and nvcc
// finds a device implementation.
REVRNN_HD float exp_(float x) { return expf(x); }
REVRNN_HD double exp_(double x) { return exp(x); }
REVRNN_HD float tanh_(float x) { return tanhf(x); }
REVRNN_HD double tanh_(double x) { return tanh(x); }

template <typename T>
REVRNN_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

}  // namespace revrnn
