#include "cpu/blas.h"

#include <dlfcn.h>

#include <stdexcept>

#include "revrnn/colmajor.h"

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
using local_threads_t = int (*)(int);
// The Fortran interface (column-major, every size by address), for libraries that export no
// CBLAS (torch's MKL). Sizes are handed in as 64-bit integers: a 32-bit-integer library reads
// their low half, which is the value on a little-endian machine for sizes < 2^31 (the only
// ones passed, see `call`), and a 64-bit-integer library reads all of it. The trailing lengths
// of the character arguments are what gfortran-built libraries expect; C ones ignore them.
template <typename T>
using fgemm_t = void (*)(const char*, const char*, const int64_t*, const int64_t*, const int64_t*, const T*, const T*,
                         const int64_t*, const T*, const int64_t*, const T*, T*, const int64_t*, size_t, size_t);

struct Blas {
  void* handle = nullptr;
  sgemm_t sgemm = nullptr;
  dgemm_t dgemm = nullptr;
  fgemm_t<float> fsgemm = nullptr;  // used where the library has no CBLAS
  fgemm_t<double> fdgemm = nullptr;
  threads_t threads = nullptr;
  local_threads_t local_threads = nullptr;  // MKL: the calling thread's count, returns the old one
  bool any() const { return sgemm || fsgemm; }
};

Blas blas;

std::string probe();  // "" when the loaded library computes a known product right

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
    next.sgemm = nullptr;
    next.dgemm = nullptr;
    next.fsgemm = reinterpret_cast<fgemm_t<float>>(dlsym(handle, (prefix + "sgemm_").c_str()));
    next.fdgemm = reinterpret_cast<fgemm_t<double>>(dlsym(handle, (prefix + "dgemm_").c_str()));
  }
  if (!next.sgemm && !(next.fsgemm && next.fdgemm)) {
    dlclose(handle);
    return path + " has neither " + prefix + "cblas_sgemm/" + prefix + "cblas_dgemm nor " + prefix + "sgemm_/" +
           prefix + "dgemm_";
  }
  // single-threaded: the executor's own threads call it on their slices (csrc/cpu/device.h);
  // OpenBLAS for good, MKL per team member (OneThread)
  if (next.threads) next.threads(1);
  next.local_threads =
      reinterpret_cast<local_threads_t>(dlsym(handle, (prefix + "MKL_Set_Num_Threads_Local").c_str()));
  const Blas old = blas;
  blas = next;
  const std::string wrong = probe();
  if (!wrong.empty()) {
    blas = old;
    return path + ": " + wrong;
  }
  return "";  // the old library stays loaded: a call in flight may still use it
}

bool blas_loaded() { return blas.any(); }

// MKL would open a nested OpenMP team per call inside the executor's (an allocation each time)
OneThread::OneThread() : old(blas.local_threads ? blas.local_threads(1) : -1) {}
OneThread::~OneThread() {
  if (old >= 0) blas.local_threads(old);
}

namespace {

// Column-major C = alpha op(A) op(B) + beta C through the Fortran interface.
template <typename T>
void fortran(bool ta, bool tb, int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t lda, const T* B,
             int64_t ldb, T beta, T* C, int64_t ldc) {
  const char a = ta ? 'T' : 'N', b = tb ? 'T' : 'N';
  if constexpr (sizeof(T) == sizeof(float)) {
    blas.fsgemm(&a, &b, &m, &n, &k, &alpha, A, &lda, B, &ldb, &beta, C, &ldc, 1, 1);
  } else {
    blas.fdgemm(&a, &b, &m, &n, &k, &alpha, A, &lda, B, &ldb, &beta, C, &ldc, 1, 1);
  }
}

// Sizes reach here below 2^31: the glue refuses larger operands before a team starts
// (revrnn/backends/compiled.py: Target.check), since nothing may throw inside an OpenMP team.
template <typename T>
void call(int order, bool ta, bool tb, int64_t M, int64_t N, int64_t K, T alpha, const T* A, int64_t lda, const T* B,
          int64_t ldb, T beta, T* C, int64_t ldc) {
  if (!blas.any()) throw std::runtime_error("revrnn: no BLAS loaded");
  if (!blas.sgemm) {
    if (order == kColMajor) return fortran(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    const ColMajorGemm<T> g = colmajor(ta, tb, M, N, K, A, lda, B, ldb);
    return fortran(g.trans_a, g.trans_b, g.m, g.n, g.k, alpha, g.A, g.lda, g.B, g.ldb, beta, C, ldc);
  }
  const int a = ta ? kTrans : kNoTrans, b = tb ? kTrans : kNoTrans;
  if constexpr (sizeof(T) == sizeof(float)) {
    blas.sgemm(order, a, b, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  } else {
    blas.dgemm(order, a, b, int(M), int(N), int(K), alpha, A, int(lda), B, int(ldb), beta, C, int(ldc));
  }
}

// One small product per dtype and transpose pair, against the sums done here: a library whose
// interface differs from what was resolved (its integer width, its argument order) fails it.
template <typename T>
bool probe_one(bool ta, bool tb) {
  const T a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {7, 8, 9, 10, 11, 12};  // A: 2x3, B: 3x2 (as stored)
  T c[4] = {-1, -1, -1, -1};
  call<T>(kRowMajor, ta, tb, 2, 2, 3, T(1), a, ta ? 2 : 3, b, tb ? 3 : 2, T(0), c, 2);
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) {
      T want = 0;
      for (int l = 0; l < 3; ++l) want += (ta ? a[l * 2 + i] : a[i * 3 + l]) * (tb ? b[j * 3 + l] : b[l * 2 + j]);
      if (c[i * 2 + j] != want) return false;
    }
  return true;
}

std::string probe() {
  for (int t = 0; t < 4; ++t)
    if (!probe_one<float>(t & 1, t & 2) || !probe_one<double>(t & 1, t & 2))
      return "its GEMM computed a wrong product (an interface other than the one resolved?)";
  return "";
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
