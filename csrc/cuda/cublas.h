// cuBLAS, loaded at run time from a shared library (dlopen), as the CPU's BLAS is
// (csrc/cpu/blas.h): the build needs no cuBLAS headers or library, and the module shares the
// cuBLAS that torch has loaded (revrnn/backends/cuda.py finds its path). Only the few functions
// of cuBLAS's stable C API the executor calls are declared here.
#pragma once

#include <cstddef>
#include <string>

namespace revrnn {
namespace cuda {
namespace cublas {

// Loads `path` and resolves the functions; "" on success, else why it failed.
std::string load(const std::string& path);
bool loaded();

// This host thread's handle for `device` (created on first use, while `device` is current),
// bound to `stream` and `workspace`; the cuBLAS status (0: success) and the handle in *out.
// Handles live until the process ends: destroying them at thread exit can run after the driver
// has shut down.
int prepare(int device, void* stream, void* workspace, std::size_t workspace_bytes, void** out);

// Column-major C = alpha op(A) op(B) + beta C (cublasSgemm / cublasDgemm); the cuBLAS status.
template <typename T>
int gemm(void* handle, bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* A, int lda, const T* B,
         int ldb, T beta, T* C, int ldc);

// The name of a cuBLAS status (cublasGetStatusName where the library has it).
std::string status_name(int status);

}  // namespace cublas
}  // namespace cuda
}  // namespace revrnn
