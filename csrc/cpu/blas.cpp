#include "cpu/blas.h"

#include <dlfcn.h>

#include <stdexcept>

namespace revrnn {
namespace cpu {
namespace {

// CBLAS's enum values (cblas.h): fixed by the standard interface, so no header is needed.
constexpr int kRowMajor = 101, kColMajor = 102, kNoTrans = 111, kTrans = 112;

using sgemm_t = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                         float, float*, int);
using dgemm_t = void (*)(int, int, int, int, int, int, double, const double*, int, const double*,
                         int, double, double*, int);
using threads_t = void (*)(int);

struct Blas {
  void* handle = nullptr;
  sgemm_t sgemm = nullptr;
  dgemm_t dgemm = nullptr;
  threads_t threads = nullptr;
};

Blas blas;

}  // namespace

std::string load_blas(const std::string& path, const std::string& prefix) {
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (!handle) return std::string("cannot load ") + path + ": " + dlerror();
  Blas next;
  next.handle = handle;
  next.sgemm = reinterpret_cast<sgemm_t>(dlsym(handle, (prefix + "cblas_sgemm").c_str()));
  next.dgemm = reinterpret_cast<dgemm_t>(dlsym(handle, (prefix + "cblas_dgemm").c_str()));
  next.threads = reinterpret_cast<threads_t>(dlsym(handle, (prefix + "openblas_set_num_threads").c_str()));
  if (!next.sgemm || !next.dgemm) {
    dlclose(handle);
    return path + " has no " + prefix + "cblas_sgemm/" + prefix + "cblas_dgemm";
  }
  // single-threaded: the executor's own threads call it on their slices (csrc/cpu/device.h)
  if (next.threads) next.threads(1);
  blas = next;  // the old library stays loaded: a call in flight may still use it
  return "";
}

bool blas_loaded() { return blas.sgemm != nullptr; }

namespace {

template <typename T>
void call(int order, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  const int a = ta ? kTrans : kNoTrans, b = tb ? kTrans : kNoTrans;
  if constexpr (sizeof(T) == sizeof(float)) {
    if (!blas.sgemm) throw std::runtime_error("revrnn: no BLAS loaded");
    blas.sgemm(order, a, b, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  } else {
    if (!blas.dgemm) throw std::runtime_error("revrnn: no BLAS loaded");
    blas.dgemm(order, a, b, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  }
}

}  // namespace

template <typename T>
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B, int64_t ldb,
          T beta, T* C, int64_t ldc) {
  call(kRowMajor, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

template <typename T>
void gemm_colmajor(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t lda, const T* B,
                   int64_t ldb, T beta, T* C, int64_t ldc) {
  call(kColMajor, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
}

template void gemm<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*, int64_t,
                          float, float*, int64_t);
template void gemm<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t, const double*,
                           int64_t, double, double*, int64_t);
template void gemm_colmajor<float>(bool, bool, int64_t, int64_t, int64_t, float, const float*, int64_t, const float*,
                                   int64_t, float, float*, int64_t);
template void gemm_colmajor<double>(bool, bool, int64_t, int64_t, int64_t, double, const double*, int64_t,
                                    const double*, int64_t, double, double*, int64_t);

}  // namespace cpu
}  // namespace revrnn
