// Shared definitions of the framework-free core: host+device qualifiers and the math overloads
// that resolve to the same float/double functions on the host and on the device.
#pragma once

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define REVRNN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
// Always inlined: an element function that is called, not inlined, keeps its SIMD loop scalar.
#define REVRNN_HD inline __attribute__((always_inline))
#else
#define REVRNN_HD inline
#endif

// glibc's libmvec (x86_64, glibc >= 2.35 for tanh and log1p) holds SIMD versions of exp, tanh,
// log and log1p.
// Declaring the scalar functions SIMD-enabled lets the compiler call them 4, 8 or 16 lanes at a
// time in `#pragma omp simd` loops, without -ffast-math's other liberties (libmvec: <= 4 ulp).
// The build links libmvec where this is on (CMakeLists.txt, REVRNN_MVEC).
#if !defined(__CUDACC__) && defined(REVRNN_MVEC)
extern "C" {
float expf(float) __attribute__((simd("notinbranch")));
double exp(double) __attribute__((simd("notinbranch")));
float tanhf(float) __attribute__((simd("notinbranch")));
double tanh(double) __attribute__((simd("notinbranch")));
float logf(float) __attribute__((simd("notinbranch")));
double log(double) __attribute__((simd("notinbranch")));
float log1pf(float) __attribute__((simd("notinbranch")));
double log1p(double) __attribute__((simd("notinbranch")));
}
#endif

// `omp simd` on the host (the build passes -fopenmp-simd; the clause, e.g. reduction(+ : s), is
// the macro's argument), nothing on the device.
#ifdef __CUDACC__
#define REVRNN_SIMD(...)
#else
#define REVRNN_PRAGMA(x) _Pragma(#x)
#define REVRNN_SIMD(...) REVRNN_PRAGMA(omp simd __VA_ARGS__)
#endif

namespace revrnn {

// Explicit overloads instead of std:: calls so that float stays float on both sides and nvcc
// finds a device implementation.
REVRNN_HD float exp_(float x) { return expf(x); }
REVRNN_HD double exp_(double x) { return exp(x); }
REVRNN_HD float tanh_(float x) { return tanhf(x); }
REVRNN_HD double tanh_(double x) { return tanh(x); }
REVRNN_HD float log_(float x) { return logf(x); }
REVRNN_HD double log_(double x) { return log(x); }
REVRNN_HD float log1p_(float x) { return log1pf(x); }
REVRNN_HD double log1p_(double x) { return log1p(x); }
// Round to the nearest integer, ties to even (the default rounding mode): torch.round.
REVRNN_HD float rint_(float x) { return rintf(x); }
REVRNN_HD double rint_(double x) { return rint(x); }

template <typename T>
REVRNN_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

}  // namespace revrnn
