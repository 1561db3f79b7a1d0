// pybind11 module revrnn._C_cuda: the executor's chunk calls on CUDA (csrc/chunks.h, the same as
// revrnn._C's), whose `where` argument is [device, stream, workspace, workspace_bytes]: the
// device index, the caller's cudaStream_t (torch.cuda.current_stream().cuda_stream), and a
// cuBLAS workspace the caller allocated. Calls enqueue work on that stream and never synchronise.
#include "chunks.h"
#include "cuda/cublas.h"
#include "cuda/executor.h"

#ifndef REVRNN_VERSION
#error "REVRNN_VERSION must be defined by the build (CMakeLists.txt)"
#endif

namespace py = pybind11;
using revrnn::bindings::Addresses;

namespace {

revrnn::Where where(const char* fn, const Addresses& a) {
  if (a.size() != 4)
    throw std::invalid_argument(std::string(fn) +
                                ": argument 'where' must list [device, stream, workspace, workspace_bytes], got " +
                                std::to_string(a.size()) + " values");
  if (a[0] > 1024) throw std::invalid_argument(std::string(fn) + ": device index " + std::to_string(a[0]) + " is invalid");
  revrnn::Where w;
  w.device = int(a[0]);
  w.stream = reinterpret_cast<void*>(a[1]);
  w.workspace = revrnn::bindings::pointer<uint8_t>(fn, "workspace", a[2], a[3] == 0);
  w.workspace_bytes = std::size_t(a[3]);
  return w;
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "revrnn's CUDA executor (framework-free: raw device pointers, sizes, a stream)";
  m.def("version", [] { return std::string(REVRNN_VERSION); }, "Version of revrnn this extension was built from.");
  revrnn::bindings::add_dtype(m);
  m.def("load_cublas", &revrnn::cuda::cublas::load, py::arg("path"),
        "Load cuBLAS from the shared library at `path`; returns '' or why it failed.");
  revrnn::bindings::def_chunks<Addresses>(m, revrnn::cuda::registry(), "where", where);
}
