#include "cuda/cublas.h"

#include <dlfcn.h>

#include <unordered_map>

namespace revrnn {
namespace cuda {
namespace cublas {
namespace {

// cuBLAS's C API (cublas_api.h): a handle is an opaque pointer, statuses and operations are ints
// (CUBLAS_OP_N = 0, CUBLAS_OP_T = 1).
constexpr int kOpN = 0, kOpT = 1;
using create_t = int (*)(void**);
using set_stream_t = int (*)(void*, void*);
using set_workspace_t = int (*)(void*, void*, std::size_t);
using sgemm_t = int (*)(void*, int, int, int, int, int, const float*, const float*, int, const float*, int,
                        const float*, float*, int);
using dgemm_t = int (*)(void*, int, int, int, int, int, const double*, const double*, int, const double*, int,
                        const double*, double*, int);
using status_name_t = const char* (*)(int);

struct Api {
  create_t create = nullptr;
  set_stream_t set_stream = nullptr;
  set_workspace_t set_workspace = nullptr;
  sgemm_t sgemm = nullptr;
  dgemm_t dgemm = nullptr;
  status_name_t status_name = nullptr;
};

Api api;

template <class F>
F symbol(void* lib, const char* name) {
  return reinterpret_cast<F>(dlsym(lib, name));
}

}  // namespace

std::string load(const std::string& path) {
  void* lib = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!lib) return "cannot load " + path + ": " + dlerror();
  Api next;
  next.create = symbol<create_t>(lib, "cublasCreate_v2");
  next.set_stream = symbol<set_stream_t>(lib, "cublasSetStream_v2");
  next.set_workspace = symbol<set_workspace_t>(lib, "cublasSetWorkspace_v2");
  next.sgemm = symbol<sgemm_t>(lib, "cublasSgemm_v2");
  next.dgemm = symbol<dgemm_t>(lib, "cublasDgemm_v2");
  next.status_name = symbol<status_name_t>(lib, "cublasGetStatusName");
  if (!next.create || !next.set_stream || !next.set_workspace || !next.sgemm || !next.dgemm) {
    dlclose(lib);
    return path + " lacks cublasCreate_v2, cublasSetStream_v2, cublasSetWorkspace_v2 or cublas[SD]gemm_v2";
  }
  api = next;  // a library loaded before stays loaded: handles made by it may still be in use
  return "";
}

bool loaded() { return api.create != nullptr; }

int prepare(int device, void* stream, void* workspace, std::size_t workspace_bytes, void** out) {
  thread_local std::unordered_map<int, void*> handles;
  void*& h = handles[device];
  if (!h) {
    const int status = api.create(&h);
    if (status != 0) {
      h = nullptr;
      return status;
    }
  }
  *out = h;
  const int status = api.set_stream(h, stream);
  return status != 0 ? status : api.set_workspace(h, workspace, workspace_bytes);
}

template <>
int gemm<float>(void* h, bool ta, bool tb, int m, int n, int k, float alpha, const float* A, int lda, const float* B,
                int ldb, float beta, float* C, int ldc) {
  return api.sgemm(h, ta ? kOpT : kOpN, tb ? kOpT : kOpN, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc);
}

template <>
int gemm<double>(void* h, bool ta, bool tb, int m, int n, int k, double alpha, const double* A, int lda,
                 const double* B, int ldb, double beta, double* C, int ldc) {
  return api.dgemm(h, ta ? kOpT : kOpN, tb ? kOpT : kOpN, m, n, k, &alpha, A, lda, B, ldb, &beta, C, ldc);
}

std::string status_name(int status) {
  if (api.status_name) return api.status_name(status);
  return "cuBLAS status " + std::to_string(status);
}

}  // namespace cublas
}  // namespace cuda
}  // namespace revrnn
