// pybind11 module revrnn._C_cuda (built only with -DREVRNN_CUDA=ON): thin bindings of the CUDA
// launchers. Same arguments as revrnn._C plus `stream`, the cudaStream_t as an int (e.g.
// torch.cuda.current_stream().cuda_stream); calls enqueue work and never synchronise.
#include "bindings.h"
#include "cuda/lstm.h"

namespace py = pybind11;
using revrnn::bindings::DType;
using revrnn::bindings::pointer;
using std::uintptr_t;

namespace {

void check(const char* fn, cudaError_t err) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(fn) + ": " + cudaGetErrorString(err));
}

template <typename T>
void forward(int64_t B, int64_t H, uintptr_t gates, uintptr_t h_prev, uintptr_t c_prev,
             uintptr_t mask, uintptr_t h, uintptr_t c, uintptr_t y, uintptr_t stream) {
  const char* fn = "lstm_forward";
  check(fn, revrnn::cuda::lstm_forward<T>(
                B, H, pointer<T>(fn, "gates", gates), pointer<const T>(fn, "h_prev", h_prev),
                pointer<const T>(fn, "c_prev", c_prev),
                pointer<const uint8_t>(fn, "mask", mask, true), pointer<T>(fn, "h", h),
                pointer<T>(fn, "c", c), pointer<T>(fn, "y", y),
                reinterpret_cast<cudaStream_t>(stream)));
}

template <typename T>
void backward(int64_t B, int64_t H, uintptr_t act, uintptr_t c_prev, uintptr_t c,
              uintptr_t grad_y, uintptr_t mask, uintptr_t dh, uintptr_t dc, uintptr_t dgates,
              uintptr_t stream) {
  const char* fn = "lstm_backward";
  check(fn, revrnn::cuda::lstm_backward<T>(
                B, H, pointer<const T>(fn, "act", act), pointer<const T>(fn, "c_prev", c_prev),
                pointer<const T>(fn, "c", c), pointer<const T>(fn, "grad_y", grad_y),
                pointer<const uint8_t>(fn, "mask", mask, true), pointer<T>(fn, "dh", dh),
                pointer<T>(fn, "dc", dc), pointer<T>(fn, "dgates", dgates),
                reinterpret_cast<cudaStream_t>(stream)));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "revrnn's CUDA kernels (framework-free: raw device pointers, sizes, dtype, stream)";
  m.def("version", [] { return std::string(REVRNN_VERSION); });
  revrnn::bindings::add_dtype(m);
  m.def(
      "lstm_forward",
      [](DType dtype, int64_t B, int64_t H, uintptr_t gates, uintptr_t h_prev, uintptr_t c_prev,
         uintptr_t mask, uintptr_t h, uintptr_t c, uintptr_t y, uintptr_t stream) {
        revrnn::bindings::check_sizes("lstm_forward", B, H);
        (dtype == DType::float32 ? forward<float> : forward<double>)(B, H, gates, h_prev, c_prev,
                                                                     mask, h, c, y, stream);
      },
      py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("gates"), py::arg("h_prev"),
      py::arg("c_prev"), py::arg("mask"), py::arg("h"), py::arg("c"), py::arg("y"),
      py::arg("stream"), py::call_guard<py::gil_scoped_release>());
  m.def(
      "lstm_backward",
      [](DType dtype, int64_t B, int64_t H, uintptr_t act, uintptr_t c_prev, uintptr_t c,
         uintptr_t grad_y, uintptr_t mask, uintptr_t dh, uintptr_t dc, uintptr_t dgates,
         uintptr_t stream) {
        revrnn::bindings::check_sizes("lstm_backward", B, H);
        (dtype == DType::float32 ? backward<float> : backward<double>)(
            B, H, act, c_prev, c, grad_y, mask, dh, dc, dgates, stream);
      },
      py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("act"), py::arg("c_prev"),
      py::arg("c"), py::arg("grad_y"), py::arg("mask"), py::arg("dh"), py::arg("dc"),
      py::arg("dgates"), py::arg("stream"), py::call_guard<py::gil_scoped_release>());
}
