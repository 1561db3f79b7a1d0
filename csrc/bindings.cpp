// pybind11 module revrnn._C: thin bindings of the CPU executor (see bindings.h for conventions).
#include "bindings.h"

#include "cpu/lstm.h"

#ifndef REVRNN_VERSION
#error "REVRNN_VERSION must be defined by the build (CMakeLists.txt)"
#endif

namespace py = pybind11;
using revrnn::bindings::DType;
using revrnn::bindings::pointer;
using std::uintptr_t;

namespace {

template <typename T>
void forward(int64_t B, int64_t H, uintptr_t gates, uintptr_t h_prev, uintptr_t c_prev,
             uintptr_t mask, uintptr_t h, uintptr_t c, uintptr_t y) {
  const char* fn = "lstm_forward";
  revrnn::cpu::lstm_forward<T>(
      B, H, pointer<T>(fn, "gates", gates), pointer<const T>(fn, "h_prev", h_prev),
      pointer<const T>(fn, "c_prev", c_prev), pointer<const uint8_t>(fn, "mask", mask, true),
      pointer<T>(fn, "h", h), pointer<T>(fn, "c", c), pointer<T>(fn, "y", y));
}

template <typename T>
void backward(int64_t B, int64_t H, uintptr_t act, uintptr_t c_prev, uintptr_t c,
              uintptr_t grad_y, uintptr_t mask, uintptr_t dh, uintptr_t dc, uintptr_t dgates) {
  const char* fn = "lstm_backward";
  revrnn::cpu::lstm_backward<T>(
      B, H, pointer<const T>(fn, "act", act), pointer<const T>(fn, "c_prev", c_prev),
      pointer<const T>(fn, "c", c), pointer<const T>(fn, "grad_y", grad_y),
      pointer<const uint8_t>(fn, "mask", mask, true), pointer<T>(fn, "dh", dh),
      pointer<T>(fn, "dc", dc), pointer<T>(fn, "dgates", dgates));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "revrnn's compiled CPU executor (framework-free: raw pointers, sizes, dtype flags)";
  m.def("version", [] { return std::string(REVRNN_VERSION); },
        "Version of revrnn this extension was built from.");
  revrnn::bindings::add_dtype(m);

  m.def(
      "lstm_forward",
      [](DType dtype, int64_t B, int64_t H, uintptr_t gates, uintptr_t h_prev, uintptr_t c_prev,
         uintptr_t mask, uintptr_t h, uintptr_t c, uintptr_t y) {
        revrnn::bindings::check_sizes("lstm_forward", B, H);
        (dtype == DType::float32 ? forward<float> : forward<double>)(B, H, gates, h_prev, c_prev,
                                                                     mask, h, c, y);
      },
      py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("gates"), py::arg("h_prev"),
      py::arg("c_prev"), py::arg("mask"), py::arg("h"), py::arg("c"), py::arg("y"),
      py::call_guard<py::gil_scoped_release>(),
      "One LSTM step's pointwise forward on contiguous (B, 4H) gates and (B, H) states.\n"
      "gates: pre-activations in, activations out. mask: (B) bytes or 0. Writes h, c, y.");

  m.def(
      "lstm_backward",
      [](DType dtype, int64_t B, int64_t H, uintptr_t act, uintptr_t c_prev, uintptr_t c,
         uintptr_t grad_y, uintptr_t mask, uintptr_t dh, uintptr_t dc, uintptr_t dgates) {
        revrnn::bindings::check_sizes("lstm_backward", B, H);
        (dtype == DType::float32 ? backward<float> : backward<double>)(B, H, act, c_prev, c,
                                                                       grad_y, mask, dh, dc, dgates);
      },
      py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("act"), py::arg("c_prev"),
      py::arg("c"), py::arg("grad_y"), py::arg("mask"), py::arg("dh"), py::arg("dc"),
      py::arg("dgates"), py::call_guard<py::gil_scoped_release>(),
      "One LSTM step's pointwise backward. dh, dc: gradients of the state after the step in,\n"
      "of the state before it out (dh without the dgates @ W_hh term). Writes dgates.");
}
