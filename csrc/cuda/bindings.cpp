// pybind11 module revrnn._C_cuda (built only with -DREVRNN_CUDA=ON): thin bindings of the CUDA
// step launchers. Arguments as revrnn._C's, plus `stream`, the cudaStream_t as an int (e.g.
// torch.cuda.current_stream().cuda_stream); calls enqueue work and never synchronise.
#include <pybind11/stl.h>

#include <vector>

#include "bindings.h"
#include "cuda/step.h"

namespace py = pybind11;
using revrnn::bindings::DType;
using revrnn::bindings::pointer;
using std::uintptr_t;

namespace {

void check(const char* fn, cudaError_t err) {
  if (err != cudaSuccess) throw std::runtime_error(std::string(fn) + ": " + cudaGetErrorString(err));
}

template <typename T>
void forward(const std::string& cell, int phase, int64_t B, int64_t H, uintptr_t xp, uintptr_t rec,
             uintptr_t b_rec, const std::vector<uintptr_t>& prev, const std::vector<uintptr_t>& next,
             uintptr_t y, uintptr_t act, uintptr_t aux, uintptr_t mid, uintptr_t unit, uintptr_t mask,
             uintptr_t stream) {
  const char* fn = "forward_step";
  revrnn::StepForward<T> s{H, pointer<const T>(fn, "xp", xp), pointer<const T>(fn, "rec", rec),
                           pointer<const T>(fn, "b_rec", b_rec, true), {}, {}, pointer<T>(fn, "y", y),
                           pointer<T>(fn, "act", act), pointer<const T>(fn, "aux", aux, true),
                           pointer<T>(fn, "mid", mid, true), pointer<const T>(fn, "unit", unit, true)};
  revrnn::bindings::states(fn, "prev", prev, s.prev);
  revrnn::bindings::states(fn, "next", next, s.next);
  check(fn, revrnn::cuda::forward_step<T>(cell, phase, B, pointer<const uint8_t>(fn, "mask", mask, true), s,
                                          reinterpret_cast<cudaStream_t>(stream)));
}

template <typename T>
void backward(const std::string& cell, int phase, int64_t B, int64_t H, uintptr_t act,
              const std::vector<uintptr_t>& prev, const std::vector<uintptr_t>& next,
              uintptr_t grad_y, const std::vector<uintptr_t>& dstate, uintptr_t dxp, uintptr_t drec,
              uintptr_t aux, uintptr_t mid, uintptr_t dmid, uintptr_t unit, uintptr_t dunit, uintptr_t mask,
              uintptr_t stream) {
  const char* fn = "backward_step";
  revrnn::StepBackward<T> s{H, pointer<const T>(fn, "act", act), {}, {},
                            pointer<const T>(fn, "grad_y", grad_y), {}, pointer<T>(fn, "dxp", dxp),
                            pointer<T>(fn, "drec", drec), pointer<const T>(fn, "aux", aux, true),
                            pointer<const T>(fn, "mid", mid, true), pointer<T>(fn, "dmid", dmid, true),
                            pointer<const T>(fn, "unit", unit, true), pointer<T>(fn, "dunit", dunit, true)};
  revrnn::bindings::states(fn, "prev", prev, s.prev);
  revrnn::bindings::states(fn, "next", next, s.next);
  revrnn::bindings::states(fn, "dstate", dstate, s.dstate);
  check(fn, revrnn::cuda::backward_step<T>(cell, phase, B, pointer<const uint8_t>(fn, "mask", mask, true), s,
                                           reinterpret_cast<cudaStream_t>(stream)));
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
  m.doc() = "revrnn's CUDA step launchers (framework-free: raw device pointers, sizes, a stream)";
  m.def("version", [] { return std::string(REVRNN_VERSION); });
  revrnn::bindings::add_dtype(m);
  m.def(
      "forward_step",
      [](const std::string& cell, int phase, DType dtype, int64_t B, int64_t H, uintptr_t xp, uintptr_t rec,
         uintptr_t b_rec, const std::vector<uintptr_t>& prev, const std::vector<uintptr_t>& next,
         uintptr_t y, uintptr_t act, uintptr_t aux, uintptr_t mid, uintptr_t unit, uintptr_t mask,
         uintptr_t stream) {
        revrnn::bindings::check_sizes("forward_step", B, H);
        (dtype == DType::float32 ? forward<float> : forward<double>)(cell, phase, B, H, xp, rec, b_rec, prev,
                                                                     next, y, act, aux, mid, unit, mask, stream);
      },
      py::arg("cell"), py::arg("phase"), py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("xp"), py::arg("rec"),
      py::arg("b_rec"), py::arg("prev"), py::arg("next"), py::arg("y"), py::arg("act"), py::arg("aux"), py::arg("mid"),
      py::arg("unit"), py::arg("mask"), py::arg("stream"), "One step's pointwise forward (revrnn/step.h).");
  m.def(
      "backward_step",
      [](const std::string& cell, int phase, DType dtype, int64_t B, int64_t H, uintptr_t act,
         const std::vector<uintptr_t>& prev, const std::vector<uintptr_t>& next, uintptr_t grad_y,
         const std::vector<uintptr_t>& dstate, uintptr_t dxp, uintptr_t drec, uintptr_t aux,
         uintptr_t mid, uintptr_t dmid, uintptr_t unit, uintptr_t dunit, uintptr_t mask, uintptr_t stream) {
        revrnn::bindings::check_sizes("backward_step", B, H);
        (dtype == DType::float32 ? backward<float> : backward<double>)(
            cell, phase, B, H, act, prev, next, grad_y, dstate, dxp, drec, aux, mid, dmid, unit, dunit, mask, stream);
      },
      py::arg("cell"), py::arg("phase"), py::arg("dtype"), py::arg("B"), py::arg("H"), py::arg("act"), py::arg("prev"),
      py::arg("next"), py::arg("grad_y"), py::arg("dstate"), py::arg("dxp"), py::arg("drec"), py::arg("aux"),
      py::arg("mid"), py::arg("dmid"), py::arg("unit"), py::arg("dunit"), py::arg("mask"), py::arg("stream"), "One step's pointwise backward (revrnn/step.h).");
}
