// pybind11 module revrnn._C: thin bindings of the CPU executor (see bindings.h for conventions).
#include "bindings.h"

#include <pybind11/stl.h>

#include <climits>
#include <tuple>

#include "cpu/blas.h"
#include "cpu/executor.h"

#ifndef REVRNN_VERSION
#error "REVRNN_VERSION must be defined by the build (CMakeLists.txt)"
#endif

namespace py = pybind11;
using revrnn::bindings::DType;
using revrnn::bindings::pointer;
using revrnn::cpu::CellEntry;
using std::uintptr_t;
using Addresses = std::vector<uintptr_t>;

namespace {

const CellEntry& cell_entry(const char* fn, const std::string& name) {
  const CellEntry* e = revrnn::cpu::find_cell(name);
  if (!e)
    throw std::invalid_argument(std::string(fn) + ": argument 'cell' must be one of " +
                                revrnn::cpu::cell_names() + ", got '" + name + "'");
  return *e;
}

// Sizes the executor passes to a 32-bit BLAS: every GEMM dimension and leading dimension.
void check_chunk(const char* fn, const CellEntry& e, int64_t K, int64_t B, int64_t H, int threads,
                 std::size_t n_states) {
  revrnn::bindings::check_sizes(fn, B, H);
  if (K < 0) throw std::invalid_argument(std::string(fn) + ": K must be >= 0, got " + std::to_string(K));
  if (threads < 1)
    throw std::invalid_argument(std::string(fn) + ": threads must be >= 1, got " + std::to_string(threads));
  if (n_states != std::size_t(e.states))
    throw std::invalid_argument(std::string(fn) + ": the " + e.name + " cell has " +
                                std::to_string(e.states) + " state tensors, got " + std::to_string(n_states));
  if (K * B > INT_MAX || e.gates * H > INT_MAX)
    throw std::invalid_argument(std::string(fn) + ": K*B=" + std::to_string(K * B) + " or G=" +
                                std::to_string(e.gates * H) + " exceeds the BLAS's 32-bit sizes");
  if (!revrnn::cpu::blas_loaded())
    throw std::runtime_error(std::string(fn) + ": no BLAS loaded (call load_blas first)");
}

// The operands a cell reads (CellEntry) must not be null; the others may be.
template <typename T>
revrnn::ChunkForward<T> forward_args(const CellEntry& e, int64_t K, int64_t B, int64_t H, uintptr_t xp, uintptr_t w_hh,
                                     uintptr_t b_rec, uintptr_t mask, const Addresses& states,
                                     uintptr_t act, uintptr_t y, uintptr_t rec, bool keep, uintptr_t aux,
                                     uintptr_t mid, uintptr_t unit, uintptr_t fb) {
  const char* fn = "forward_chunk";
  revrnn::ChunkForward<T> c{K, B, H, pointer<const T>(fn, "xp", xp), pointer<const T>(fn, "w_hh", w_hh),
                            pointer<const T>(fn, "b_rec", b_rec, !e.rec_bias),
                            pointer<const uint8_t>(fn, "mask", mask, true), {}, pointer<T>(fn, "act", act),
                            pointer<T>(fn, "y", y), pointer<T>(fn, "rec", rec), keep,
                            pointer<const T>(fn, "aux", aux, !e.aux), pointer<T>(fn, "mid", mid, e.phases != 2),
                            pointer<const T>(fn, "unit", unit, !e.unit), pointer<T>(fn, "fb", fb, !e.feedback)};
  revrnn::bindings::states(fn, "states", states, c.states);
  return c;
}

template <typename T>
revrnn::ChunkBackward<T> backward_args(const CellEntry& e, int64_t K, int64_t B, int64_t H, uintptr_t w_hh, uintptr_t mask,
                                       uintptr_t act, const Addresses& states, uintptr_t grad_y,
                                       const Addresses& dstate, uintptr_t dxp, uintptr_t drec, uintptr_t dw_hh,
                                       uintptr_t aux, uintptr_t mid, uintptr_t dmid, uintptr_t unit,
                                       uintptr_t dunit, uintptr_t fb, uintptr_t dfb) {
  const char* fn = "backward_chunk";
  revrnn::ChunkBackward<T> c{K, B, H, pointer<const T>(fn, "w_hh", w_hh),
                             pointer<const uint8_t>(fn, "mask", mask, true), pointer<const T>(fn, "act", act),
                             {}, pointer<const T>(fn, "grad_y", grad_y), {}, pointer<T>(fn, "dxp", dxp),
                             pointer<T>(fn, "drec", drec), pointer<T>(fn, "dw_hh", dw_hh, true),
                             pointer<const T>(fn, "aux", aux, !e.aux),
                             pointer<const T>(fn, "mid", mid, e.phases != 2), pointer<T>(fn, "dmid", dmid, e.phases != 2),
                             pointer<const T>(fn, "unit", unit, !e.unit), pointer<T>(fn, "dunit", dunit, !e.unit),
                             pointer<const T>(fn, "fb", fb, !e.feedback), pointer<T>(fn, "dfb", dfb, !e.feedback)};
  revrnn::bindings::states(fn, "states", states, c.states);
  revrnn::bindings::states(fn, "dstate", dstate, c.dstate);
  return c;
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "revrnn's compiled CPU executor (framework-free: raw pointers, sizes, dtype flags)";
  m.def("version", [] { return std::string(REVRNN_VERSION); },
        "Version of revrnn this extension was built from.");
  revrnn::bindings::add_dtype(m);

  m.def("load_blas", &revrnn::cpu::load_blas, py::arg("path"), py::arg("prefix"),
        "Load the BLAS shared library at `path` (symbols `<prefix>cblas_sgemm`, ...); returns '' or\n"
        "why it failed.");
  m.def("cell_layout",
        [](const std::string& name) {
          const CellEntry& e = cell_entry("cell_layout", name);
          py::dict d;
          d["states"] = e.states;
          d["phases"] = e.phases;
          d["gates"] = e.gates;
          d["xp_gates"] = e.xp_gates;
          d["acts"] = e.acts;
          d["rec_is_xp"] = e.rec_is_xp;
          d["rec_bias"] = e.rec_bias;
          d["aux"] = e.aux;
          d["unit"] = e.unit;
          d["feedback"] = e.feedback;
          return d;
        },
        py::arg("cell"),
        "A cell's buffers (revrnn/executor.h): its state tensors, GEMM phases per step, gates (G =\n"
        "gates*H columns of the recurrent GEMMs), xp_gates (of the projection), acts (A = acts*H\n"
        "kept per step), rec_is_xp (d rec and d xp are one buffer), and what it reads: rec_bias\n"
        "(b_rec, never null), aux (a (B, H) operand), unit (a (K, H) operand, writing dunit),\n"
        "feedback (its GEMM reads g(h), kept in fb).");

  m.def(
      "forward_chunk",
      [](const std::string& cell, DType dtype, int threads, int64_t K, int64_t B, int64_t H, uintptr_t xp,
         uintptr_t w_hh, uintptr_t b_rec, uintptr_t mask, const Addresses& states, uintptr_t act, uintptr_t y,
         uintptr_t rec, bool keep, uintptr_t aux, uintptr_t mid, uintptr_t unit, uintptr_t fb) {
        const CellEntry& e = cell_entry("forward_chunk", cell);
        check_chunk("forward_chunk", e, K, B, H, threads, states.size());
        if (dtype == DType::float32)
          e.forward_f32(threads, forward_args<float>(e, K, B, H, xp, w_hh, b_rec, mask, states, act, y, rec, keep, aux, mid, unit, fb));
        else
          e.forward_f64(threads, forward_args<double>(e, K, B, H, xp, w_hh, b_rec, mask, states, act, y, rec, keep, aux, mid, unit, fb));
      },
      py::arg("cell"), py::arg("dtype"), py::arg("threads"), py::arg("K"), py::arg("B"), py::arg("H"),
      py::arg("xp"), py::arg("w_hh"), py::arg("b_rec"), py::arg("mask"), py::arg("states"), py::arg("act"),
      py::arg("y"), py::arg("rec"), py::arg("keep"), py::arg("aux") = 0, py::arg("mid") = 0, py::arg("unit") = 0, py::arg("fb") = 0, py::call_guard<py::gil_scoped_release>(),
      "K steps of one layer and direction forward (revrnn/executor.h: ChunkForward); aux: (B, H)\n"
      "per-sequence operand of the cell (a dropout mask) or 0.");

  m.def(
      "backward_chunk",
      [](const std::string& cell, DType dtype, int threads, int64_t K, int64_t B, int64_t H, uintptr_t w_hh,
         uintptr_t mask, uintptr_t act, const Addresses& states, uintptr_t grad_y, const Addresses& dstate,
         uintptr_t dxp, uintptr_t drec, uintptr_t dw_hh, uintptr_t aux, uintptr_t mid, uintptr_t dmid,
         uintptr_t unit, uintptr_t dunit, uintptr_t fb, uintptr_t dfb) {
        const CellEntry& e = cell_entry("backward_chunk", cell);
        check_chunk("backward_chunk", e, K, B, H, threads, states.size());
        if (dstate.size() != states.size())
          throw std::invalid_argument("backward_chunk: dstate and states must list as many addresses");
        if (dtype == DType::float32)
          e.backward_f32(threads, backward_args<float>(e, K, B, H, w_hh, mask, act, states, grad_y, dstate, dxp,
                                                       drec, dw_hh, aux, mid, dmid, unit, dunit, fb, dfb));
        else
          e.backward_f64(threads, backward_args<double>(e, K, B, H, w_hh, mask, act, states, grad_y, dstate, dxp,
                                                        drec, dw_hh, aux, mid, dmid, unit, dunit, fb, dfb));
      },
      py::arg("cell"), py::arg("dtype"), py::arg("threads"), py::arg("K"), py::arg("B"), py::arg("H"),
      py::arg("w_hh"), py::arg("mask"), py::arg("act"), py::arg("states"), py::arg("grad_y"),
      py::arg("dstate"), py::arg("dxp"), py::arg("drec"), py::arg("dw_hh"), py::arg("aux") = 0, py::arg("mid") = 0, py::arg("dmid") = 0, py::arg("unit") = 0,
      py::arg("dunit") = 0, py::arg("fb") = 0, py::arg("dfb") = 0,
      py::call_guard<py::gil_scoped_release>(),
      "The chunk's backward (revrnn/executor.h: ChunkBackward): dstate in and out, writes dxp,\n"
      "drec and dw_hh.");
}
