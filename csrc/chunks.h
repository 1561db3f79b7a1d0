// The chunk bindings both extension modules define (revrnn._C on the CPU, revrnn._C_cuda on
// CUDA) over their registries (revrnn/registry.h): the same arguments, the same checks, so the
// Python glue (revrnn/backends/executor.py) calls either the same way. Only the first argument
// after the dtype differs: where the chunk runs (csrc/bindings.cpp, csrc/cuda/bindings.cpp).
#pragma once

#include <pybind11/stl.h>

#include <climits>
#include <optional>
#include <type_traits>
#include <string>
#include <vector>

#include "bindings.h"
#include "revrnn/registry.h"

namespace revrnn {
namespace bindings {

namespace py = pybind11;
using Addresses = std::vector<std::uintptr_t>;
using std::uintptr_t;

inline const CellEntry& cell_entry(const Registry& reg, const char* fn, const std::string& name) {
  const CellEntry* e = reg.cell(name);
  if (!e)
    throw std::invalid_argument(std::string(fn) + ": argument 'cell' must be one of " + reg.cell_names() + ", got '" +
                                name + "'");
  return *e;
}

inline const RevEntry& rev_entry(const Registry& reg, const char* fn, const std::string& name) {
  const RevEntry* e = reg.rev(name);
  if (!e)
    throw std::invalid_argument(std::string(fn) + ": argument 'cell' must be one of " + reg.rev_names() + ", got '" +
                                name + "'");
  return *e;
}

inline void ready(const Registry& reg, const char* fn) {
  const std::string why = reg.not_ready();
  if (!why.empty()) throw std::runtime_error(std::string(fn) + ": " + why);
}

// Sizes the executor passes to a 32-bit BLAS: every GEMM dimension and leading dimension.
inline void check_chunk(const Registry& reg, const char* fn, const CellEntry& e, int64_t K, int64_t B, int64_t H,
                        std::size_t n_states, int64_t P) {
  check_sizes(fn, B, H);
  if (e.proj && (P < 1 || P >= H))
    throw std::invalid_argument(std::string(fn) + ": the " + e.name + " cell needs 0 < P < H, got P=" +
                                std::to_string(P) + ", H=" + std::to_string(H));
  if (K < 0) throw std::invalid_argument(std::string(fn) + ": K must be >= 0, got " + std::to_string(K));
  if (n_states != std::size_t(e.states))
    throw std::invalid_argument(std::string(fn) + ": the " + e.name + " cell has " + std::to_string(e.states) +
                                " state tensors, got " + std::to_string(n_states));
  if (K * B > INT_MAX || e.gates * H > INT_MAX)
    throw std::invalid_argument(std::string(fn) + ": K*B=" + std::to_string(K * B) + " or G=" +
                                std::to_string(e.gates * H) + " exceeds the BLAS's 32-bit sizes");
  ready(reg, fn);
}

// The operands a cell reads (CellEntry) must not be null; the others may be.
template <typename T>
inline ChunkForward<T> forward_args(const CellEntry& e, int64_t K, int64_t B, int64_t H, uintptr_t xp, uintptr_t w_hh,
                                     uintptr_t b_rec, uintptr_t mask, const Addresses& states,
                                     uintptr_t act, uintptr_t y, uintptr_t rec, bool keep, uintptr_t aux,
                                     uintptr_t mid, uintptr_t unit, uintptr_t fb, int64_t P, uintptr_t w_hr,
                                     uintptr_t params) {
  const char* fn = "forward_chunk";
  ChunkForward<T> c{K, B, H, pointer<const T>(fn, "xp", xp), pointer<const T>(fn, "w_hh", w_hh),
                            pointer<const T>(fn, "b_rec", b_rec, !e.rec_bias),
                            pointer<const uint8_t>(fn, "mask", mask, true), {}, pointer<T>(fn, "act", act, e.acts == 0),
                            pointer<T>(fn, "y", y), pointer<T>(fn, "rec", rec), keep,
                            pointer<const T>(fn, "aux", aux, !e.aux), pointer<T>(fn, "mid", mid, e.phases != 2),
                            pointer<const T>(fn, "unit", unit, !e.unit), pointer<T>(fn, "fb", fb, !e.feedback),
                            e.proj ? P : H, pointer<const T>(fn, "w_hr", w_hr, !e.proj),
                            pointer<const T>(fn, "params", params, !e.params)};
  bindings::states(fn, "states", states, c.states);
  return c;
}

template <typename T>
inline ChunkBackward<T> backward_args(const CellEntry& e, int64_t K, int64_t B, int64_t H, uintptr_t w_hh, uintptr_t mask,
                                       uintptr_t act, const Addresses& states, uintptr_t grad_y,
                                       const Addresses& dstate, uintptr_t dxp, uintptr_t drec, uintptr_t dw_hh,
                                       uintptr_t aux, uintptr_t mid, uintptr_t dmid, uintptr_t unit,
                                       uintptr_t dunit, uintptr_t fb, uintptr_t dfb, int64_t P, uintptr_t w_hr,
                                       uintptr_t dproj, uintptr_t dw_hr, uintptr_t params, uintptr_t dparams) {
  const char* fn = "backward_chunk";
  ChunkBackward<T> c{K, B, H, pointer<const T>(fn, "w_hh", w_hh),
                             pointer<const uint8_t>(fn, "mask", mask, true), pointer<const T>(fn, "act", act, e.acts == 0),
                             {}, pointer<const T>(fn, "grad_y", grad_y), {}, pointer<T>(fn, "dxp", dxp),
                             pointer<T>(fn, "drec", drec), pointer<T>(fn, "dw_hh", dw_hh, true),
                             pointer<const T>(fn, "aux", aux, !e.aux),
                             pointer<const T>(fn, "mid", mid, e.phases != 2), pointer<T>(fn, "dmid", dmid, e.phases != 2),
                             pointer<const T>(fn, "unit", unit, !e.unit), pointer<T>(fn, "dunit", dunit, !e.unit),
                             pointer<const T>(fn, "fb", fb, !e.feedback), pointer<T>(fn, "dfb", dfb, !e.feedback),
                             e.proj ? P : H, pointer<const T>(fn, "w_hr", w_hr, !e.proj),
                             pointer<T>(fn, "dproj", dproj, !e.proj), pointer<T>(fn, "dw_hr", dw_hr, true),
                             pointer<const T>(fn, "params", params, !e.params),
                             pointer<T>(fn, "dparams", dparams, !e.params)};
  bindings::states(fn, "states", states, c.states);
  bindings::states(fn, "dstate", dstate, c.dstate);
  return c;
}

// The information buffer's addresses: [word, stack, height, bits, costs, bad] and its sizes; all
// zero without forgetting. bits and costs are read where the call `accounts` for information,
// bad where it `flags` inexact reverses; elsewhere they may be 0.
inline fixed::Buffer buffer_args(const char* fn, const Addresses& a, int64_t depth, int64_t stride,
                                  int64_t spill_at, bool accounts, bool flags, bool forgetting) {
  if (a.size() != 6)
    throw std::invalid_argument(std::string(fn) + ": argument 'buffer' must list 6 addresses, got " +
                                std::to_string(a.size()));
  if (forgetting && (depth < 1 || spill_at < 1))
    throw std::invalid_argument(std::string(fn) + ": the buffer's depth and spill_at must be >= 1, got " +
                                std::to_string(depth) + ", " + std::to_string(spill_at));
  const bool off = !forgetting;
  return {pointer<int64_t>(fn, "buffer word", a[0], off), pointer<int64_t>(fn, "buffer stack", a[1], off),
          pointer<int64_t>(fn, "buffer height", a[2], off), depth, stride, spill_at,
          pointer<double>(fn, "buffer bits", a[3], off || !accounts),
          pointer<const double>(fn, "buffer costs", a[4], off || !accounts),
          pointer<uint8_t>(fn, "buffer bad", a[5], off || !flags)};
}

// One layer's addresses, in this order (0 where absent): w_ih1, w_ih2, w_hh1, w_hh2, bias1,
// bias2, drop, ints0, ints1, hf; for the reverse: dstate0, dstate1, da1, da2, hb1, hb2, rh1,
// rh2, xin; then the transposed weights w_ih1^T, w_ih2^T, w_hh1^T, w_hh2^T.
inline constexpr std::size_t kLayerAddresses = 23;

template <typename T>
RevLayer<T> layer_args(const char* fn, const RevEntry& e, const Addresses& a, bool first,
                               bool reverse) {
  if (a.size() != kLayerAddresses)
    throw std::invalid_argument(std::string(fn) + ": each entry of 'layers' must list " +
                                std::to_string(kLayerAddresses) + " addresses, got " + std::to_string(a.size()));
  const bool lstm = e.states == 2, fwd = !reverse;
  RevLayer<T> l{{pointer<const T>(fn, "w_ih1", a[0], first), pointer<const T>(fn, "w_ih2", a[1], first)},
                        {pointer<const T>(fn, "w_ih1_t", a[19], first), pointer<const T>(fn, "w_ih2_t", a[20], first)},
                        {pointer<const T>(fn, "w_hh1", a[2]), pointer<const T>(fn, "w_hh2", a[3])},
                        {pointer<const T>(fn, "w_hh1_t", a[21]), pointer<const T>(fn, "w_hh2_t", a[22])},
                        {pointer<const T>(fn, "bias1", a[4], true), pointer<const T>(fn, "bias2", a[5], true)},
                        pointer<const T>(fn, "drop", a[6], true),
                        {pointer<int64_t>(fn, "ints0", a[7]), pointer<int64_t>(fn, "ints1", a[8], !lstm)},
                        pointer<T>(fn, "hf", a[9]),
                        {pointer<T>(fn, "dstate0", a[10], fwd), pointer<T>(fn, "dstate1", a[11], fwd || !lstm)},
                        {pointer<T>(fn, "da1", a[12], fwd), pointer<T>(fn, "da2", a[13], fwd)},
                        {pointer<T>(fn, "hb1", a[14], fwd), pointer<T>(fn, "hb2", a[15], fwd)},
                        {pointer<T>(fn, "rh1", a[16], fwd || !e.reset), pointer<T>(fn, "rh2", a[17], fwd || !e.reset)},
                        pointer<T>(fn, "xin", a[18], fwd || first)};
  return l;
}

// scratch: [pre, act, rh, drh, xp, xin, din] (0 where the stack does not use one).
template <typename T>
inline void run_reversible(const Registry& reg, const char* fn, const std::string& cell, bool reverse, const Where& where, int64_t K, int64_t B,
                    int64_t G, int forget_bits, double max_forget, uintptr_t xp0, uintptr_t mask, uintptr_t y,
                    const std::vector<Addresses>& layers, const Addresses& buffer, int64_t depth, int64_t spill_at,
                    int64_t op, const Addresses& scratch) {
  const RevEntry& e = rev_entry(reg, fn, cell);
  bindings::check_sizes(fn, B, G);
  const int64_t L = int64_t(layers.size()), R = e.blocks * G;
  if (K < 0 || L < 1)
    throw std::invalid_argument(std::string(fn) + ": need K >= 0 and at least one layer, got K=" + std::to_string(K) +
                                ", " + std::to_string(L) + " layers");
  if (forget_bits < 0 || forget_bits > fixed::kGateBits)
    throw std::invalid_argument(std::string(fn) + ": forget_bits must be in [0, 10], got " +
                                std::to_string(forget_bits));
  if (B > INT_MAX || 2 * R > INT_MAX)
    throw std::invalid_argument(std::string(fn) + ": B=" + std::to_string(B) + " or 2R=" + std::to_string(2 * R) +
                                " exceeds the BLAS's 32-bit sizes");
  if (scratch.size() != 7)
    throw std::invalid_argument(std::string(fn) + ": argument 'scratch' must list 7 addresses, got " +
                                std::to_string(scratch.size()));
  ready(reg, fn);
  std::vector<RevLayer<T>> ls;
  for (int64_t l = 0; l < L; ++l) ls.push_back(layer_args<T>(fn, e, layers[l], l == 0, reverse));
  const bool deep = L > 1;
  RevChunk<T> c{K, B, G, L, forget_bits, T(max_forget), pointer<const T>(fn, "xp0", xp0),
                        pointer<const uint8_t>(fn, "mask", mask, true), ls.data(),
                        buffer_args(fn, buffer, depth, B * G, spill_at, !reverse, reverse, forget_bits > 0), op,
                        reverse ? nullptr : pointer<T>(fn, "y", y), reverse ? pointer<const T>(fn, "grad_y", y) : nullptr,
                        pointer<T>(fn, "pre", scratch[0]), pointer<T>(fn, "act", scratch[1]),
                        pointer<T>(fn, "rh", scratch[2], !e.reset), pointer<T>(fn, "drh", scratch[3], !e.reset || !reverse),
                        pointer<T>(fn, "xp", scratch[4], !deep), pointer<T>(fn, "xin", scratch[5], !deep),
                        pointer<T>(fn, "din", scratch[6], !deep || !reverse)};
  py::gil_scoped_release release;
  if constexpr (std::is_same<T, float>::value)
    (reverse ? e.backward_f32 : e.forward_f32)(where, c);
  else
    (reverse ? e.backward_f64 : e.forward_f64)(where, c);
}

// The NRU's chunk: addresses [xp, w_hh, w_heads, b_heads, mask, s, y (forward) or grad_y
// (backward), g, dxp, dheads, rec, heads, work]; 0 where a pass does not use one (b_heads and
// mask may always be 0).
template <typename T>
inline void run_nru(const Registry& reg, bool backward, const Where& where, int64_t K, int64_t B, int64_t H, int64_t M,
                    int64_t k, bool relu, std::optional<double> clamp, double eps, bool keep, const Addresses& a) {
  const char* fn = backward ? "nru_backward" : "nru_forward";
  check_sizes(fn, B, H);
  int64_t r = 0;
  while ((r + 1) * (r + 1) <= k * M) ++r;
  if (K < 0 || M < 1 || k < 1 || r * r != k * M)
    throw std::invalid_argument(std::string(fn) + ": need K >= 0, M >= 1, k >= 1 and k*M a square, got K=" +
                                std::to_string(K) + ", M=" + std::to_string(M) + ", k=" + std::to_string(k));
  if (a.size() != 13)
    throw std::invalid_argument(std::string(fn) + ": argument 'addresses' must list 13 addresses, got " +
                                std::to_string(a.size()));
  if (B > INT_MAX || H + M > INT_MAX || 2 * k + 4 * r > INT_MAX)
    throw std::invalid_argument(std::string(fn) + ": B, H + M or 2k + 4r exceeds the BLAS's 32-bit sizes");
  ready(reg, fn);
  const bool fwd = !backward;
  NruChunk<T> c{K, B, H, M, k, r, relu, clamp.has_value(), T(clamp.value_or(0.0)), T(eps), keep && fwd,
                pointer<const T>(fn, "xp", a[0], backward), pointer<const T>(fn, "w_hh", a[1]),
                pointer<const T>(fn, "w_heads", a[2]), pointer<const T>(fn, "b_heads", a[3], true),
                pointer<const uint8_t>(fn, "mask", a[4], true), pointer<T>(fn, "s", a[5]),
                fwd ? pointer<T>(fn, "y", a[6]) : nullptr, backward ? pointer<const T>(fn, "grad_y", a[6]) : nullptr,
                pointer<T>(fn, "g", a[7], fwd), pointer<T>(fn, "dxp", a[8], fwd),
                pointer<T>(fn, "dheads", a[9], fwd), pointer<T>(fn, "rec", a[10]), pointer<T>(fn, "heads", a[11]),
                pointer<T>(fn, "work", a[12])};
  py::gil_scoped_release release;
  if constexpr (std::is_same<T, float>::value)
    reg.nru_f32(where, backward, c);
  else
    reg.nru_f64(where, backward, c);
}

// The g-LSTM's sparse chunk: addresses [x, w_ih, bias, w_hh, mask, gate, offsets, units, h, c, act,
// prev, y (forward) or grad_y (backward), dh, dc, dx, dw_ih, dbias, dw_hh, dgate, wi, wh, rec, dw,
// dk]; 0 where a pass does not use one (mask, bias and the weights' gradients may always be 0; the
// open unit-steps' operands and scratch when none is open). offsets is host memory, the rest the
// device's.
template <typename T>
inline void run_glstm_sparse(const Registry& reg, bool backward, const Where& where, int64_t K, int64_t B, int64_t H,
                             int64_t I, const Addresses& a) {
  const char* fn = backward ? "glstm_sparse_backward" : "glstm_sparse_forward";
  check_sizes(fn, B, H);
  if (K < 0) throw std::invalid_argument(std::string(fn) + ": K must be >= 0, got " + std::to_string(K));
  if (I < 1) throw std::invalid_argument(std::string(fn) + ": I must be >= 1, got " + std::to_string(I));
  if (a.size() != 25)
    throw std::invalid_argument(std::string(fn) + ": argument 'addresses' must list 25 addresses, got " +
                                std::to_string(a.size()));
  if (B > INT_MAX || 4 * H > INT_MAX || I > INT_MAX)
    throw std::invalid_argument(std::string(fn) + ": B, 4H or I exceeds the BLAS's 32-bit sizes");
  ready(reg, fn);
  const bool fwd = !backward;
  const int64_t* offsets = pointer<const int64_t>(fn, "offsets", a[6]);
  const bool none = offsets[K] == 0;  // no open unit-step: its operands and scratch may be 0
  T* dw_ih = pointer<T>(fn, "dw_ih", a[16], true);
  T* dw_hh = pointer<T>(fn, "dw_hh", a[18], true);
  SparseChunk<T> c{K, B, H, I, pointer<const T>(fn, "x", a[0], none || (backward && !dw_ih)),
                   pointer<const T>(fn, "w_ih", a[1], none), pointer<const T>(fn, "bias", a[2], true),
                   pointer<const T>(fn, "w_hh", a[3]), pointer<const uint8_t>(fn, "mask", a[4], true),
                   pointer<const T>(fn, "gate", a[5], none), offsets, pointer<const int64_t>(fn, "units", a[7], none),
                   pointer<T>(fn, "h", a[8]), pointer<T>(fn, "c", a[9]), pointer<T>(fn, "act", a[10], none),
                   pointer<T>(fn, "prev", a[11], none), fwd ? pointer<T>(fn, "y", a[12]) : nullptr,
                   backward ? pointer<const T>(fn, "grad_y", a[12]) : nullptr,
                   pointer<T>(fn, "dh", a[13], fwd), pointer<T>(fn, "dc", a[14], fwd),
                   pointer<T>(fn, "dx", a[15], fwd), dw_ih, pointer<T>(fn, "dbias", a[17], true), dw_hh,
                   pointer<T>(fn, "dgate", a[19], fwd), pointer<T>(fn, "wi", a[20], none),
                   pointer<T>(fn, "wh", a[21], none), pointer<T>(fn, "rec", a[22], none),
                   pointer<T>(fn, "dw", a[23], none || fwd || !(dw_ih || dw_hh)),
                   pointer<T>(fn, "dk", a[24], none || fwd)};
  py::gil_scoped_release release;
  if constexpr (std::is_same<T, float>::value)
    reg.glstm_sparse_f32(where, backward, c);
  else
    reg.glstm_sparse_f64(where, backward, c);
}

// Defines cells, set_gemms, cell_layout, forward_chunk, backward_chunk, reversible_layout, rev_forward_chunk,
// rev_backward_chunk, nru_work_size, nru_forward, nru_backward, glstm_sparse_forward and
// glstm_sparse_backward on `m` for the cells of `reg`. Each chunk call takes, after the dtype, the
// argument `where_name` of type W, which to_where turns into a Where (checking it).
template <class W>
void def_chunks(py::module_& m, const Registry& reg, const char* where_name, Where (*to_where)(const char*, const W&)) {
  const Registry* r = &reg;
  m.def(
      "cells",
      [r] {
        std::vector<std::string> names;
        for (std::size_t i = 0; i < r->n_cells; ++i) names.push_back(r->cells[i].name);
        for (std::size_t i = 0; i < r->n_reversible; ++i) names.push_back(r->reversible[i].name);
        return names;
      },
      "The names of the cells this module runs (revrnn/cells.h): the executor's, then the reversible ones.");
  m.def(
      "set_gemms", [](bool on) { return gemms_enabled().exchange(on); }, py::arg("on"),
      "Whether this module's loops run their GEMMs; returns the previous setting. Off only to time\n"
      "the pointwise passes alone (the kernel benchmark): a skipped GEMM zeroes the output it would\n"
      "overwrite, and every result is meaningless until it is on again.");
  m.def("cell_layout",
        [r](const std::string& name) {
          const CellEntry& e = cell_entry(*r, "cell_layout", name);
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
          d["proj"] = e.proj;
          d["params"] = e.params;
          return d;
        },
        py::arg("cell"),
        "A cell's buffers (revrnn/executor.h): its state tensors, GEMM phases per step, gates (G =\n"
        "gates*H columns of the recurrent GEMMs), xp_gates (of the projection), acts (A = acts*H\n"
        "kept per step), rec_is_xp (d rec and d xp are one buffer), and what it reads: rec_bias\n"
        "(b_rec, never null), aux (a (B, H) operand), unit (a (K, H) operand, writing dunit),\n"
        "feedback (its GEMM reads g(h), kept in fb), proj (h = mid W_hr^T has P features; mid is\n"
        "kept as for two-phase cells), params (parameters beyond the GEMMs', in the cell's layout,\n"
        "with their gradient accumulated into dparams).");

  m.def(
      "forward_chunk",
      [r, to_where](const std::string& cell, DType dtype, const W& where, int64_t K, int64_t B, int64_t H, uintptr_t xp,
                    uintptr_t w_hh, uintptr_t b_rec, uintptr_t mask, const Addresses& states, uintptr_t act,
                    uintptr_t y, uintptr_t rec, bool keep, uintptr_t aux, uintptr_t mid, uintptr_t unit, uintptr_t fb,
                    int64_t P, uintptr_t w_hr, uintptr_t params) {
        const char* fn = "forward_chunk";
        const CellEntry& e = cell_entry(*r, fn, cell);
        const Where w = to_where(fn, where);
        check_chunk(*r, fn, e, K, B, H, states.size(), P);
        py::gil_scoped_release release;
        if (dtype == DType::float32)
          e.forward_f32(w, forward_args<float>(e, K, B, H, xp, w_hh, b_rec, mask, states, act, y, rec, keep, aux, mid,
                                               unit, fb, P, w_hr, params));
        else
          e.forward_f64(w, forward_args<double>(e, K, B, H, xp, w_hh, b_rec, mask, states, act, y, rec, keep, aux, mid,
                                                unit, fb, P, w_hr, params));
      },
      py::arg("cell"), py::arg("dtype"), py::arg(where_name), py::arg("K"), py::arg("B"), py::arg("H"), py::arg("xp"),
      py::arg("w_hh"), py::arg("b_rec"), py::arg("mask"), py::arg("states"), py::arg("act"), py::arg("y"),
      py::arg("rec"), py::arg("keep"), py::arg("aux") = 0, py::arg("mid") = 0, py::arg("unit") = 0, py::arg("fb") = 0,
      py::arg("P") = 0, py::arg("w_hr") = 0, py::arg("params") = 0,
      "K steps of one layer and direction forward (revrnn/executor.h: ChunkForward); aux: (B, H)\n"
      "per-sequence operand of the cell (a dropout mask) or 0.");

  m.def(
      "backward_chunk",
      [r, to_where](const std::string& cell, DType dtype, const W& where, int64_t K, int64_t B, int64_t H,
                    uintptr_t w_hh, uintptr_t mask, uintptr_t act, const Addresses& states, uintptr_t grad_y,
                    const Addresses& dstate, uintptr_t dxp, uintptr_t drec, uintptr_t dw_hh, uintptr_t aux,
                    uintptr_t mid, uintptr_t dmid, uintptr_t unit, uintptr_t dunit, uintptr_t fb, uintptr_t dfb,
                    int64_t P, uintptr_t w_hr, uintptr_t dproj, uintptr_t dw_hr, uintptr_t params, uintptr_t dparams) {
        const char* fn = "backward_chunk";
        const CellEntry& e = cell_entry(*r, fn, cell);
        const Where w = to_where(fn, where);
        check_chunk(*r, fn, e, K, B, H, states.size(), P);
        if (dstate.size() != states.size())
          throw std::invalid_argument("backward_chunk: dstate and states must list as many addresses");
        py::gil_scoped_release release;
        if (dtype == DType::float32)
          e.backward_f32(w, backward_args<float>(e, K, B, H, w_hh, mask, act, states, grad_y, dstate, dxp, drec, dw_hh,
                                                 aux, mid, dmid, unit, dunit, fb, dfb, P, w_hr, dproj, dw_hr, params,
                                                 dparams));
        else
          e.backward_f64(w, backward_args<double>(e, K, B, H, w_hh, mask, act, states, grad_y, dstate, dxp, drec,
                                                  dw_hh, aux, mid, dmid, unit, dunit, fb, dfb, P, w_hr, dproj, dw_hr,
                                                  params, dparams));
      },
      py::arg("cell"), py::arg("dtype"), py::arg(where_name), py::arg("K"), py::arg("B"), py::arg("H"),
      py::arg("w_hh"), py::arg("mask"), py::arg("act"), py::arg("states"), py::arg("grad_y"), py::arg("dstate"),
      py::arg("dxp"), py::arg("drec"), py::arg("dw_hh"), py::arg("aux") = 0, py::arg("mid") = 0, py::arg("dmid") = 0,
      py::arg("unit") = 0, py::arg("dunit") = 0, py::arg("fb") = 0, py::arg("dfb") = 0, py::arg("P") = 0,
      py::arg("w_hr") = 0, py::arg("dproj") = 0, py::arg("dw_hr") = 0, py::arg("params") = 0, py::arg("dparams") = 0,
      "The chunk's backward (revrnn/executor.h: ChunkBackward): dstate in and out, writes dxp,\n"
      "drec and dw_hh.");

  m.def("reversible_layout",
        [r](const std::string& name) {
          const RevEntry& e = rev_entry(*r, "reversible_layout", name);
          py::dict d;
          d["states"] = e.states;
          d["blocks"] = e.blocks;
          d["multiplies"] = e.multiplies;
          d["acts"] = e.acts;
          d["reset"] = e.reset;
          return d;
        },
        py::arg("cell"),
        "A reversible cell's buffers (revrnn/reversible.h): state tensors, gate blocks and exact\n"
        "multiplies of a half-update, act columns (units of G), reset (a second GEMM on r*hb).");
  for (const bool reverse : {false, true}) {
    const char* name = reverse ? "rev_backward_chunk" : "rev_forward_chunk";
    m.def(
        name,
        [r, to_where, name, reverse](const std::string& cell, DType dtype, const W& where, int64_t K, int64_t B,
                                     int64_t G, int forget_bits, double max_forget, uintptr_t xp0, uintptr_t mask,
                                     uintptr_t y, const std::vector<Addresses>& layers, const Addresses& buffer,
                                     int64_t depth, int64_t spill_at, int64_t op, const Addresses& scratch) {
          const Where w = to_where(name, where);
          if (dtype == DType::float32)
            run_reversible<float>(*r, name, cell, reverse, w, K, B, G, forget_bits, max_forget, xp0, mask, y, layers,
                                  buffer, depth, spill_at, op, scratch);
          else
            run_reversible<double>(*r, name, cell, reverse, w, K, B, G, forget_bits, max_forget, xp0, mask, y, layers,
                                   buffer, depth, spill_at, op, scratch);
        },
        py::arg("cell"), py::arg("dtype"), py::arg(where_name), py::arg("K"), py::arg("B"), py::arg("G"),
        py::arg("forget_bits"), py::arg("max_forget"), py::arg("xp0"), py::arg("mask"),
        py::arg(reverse ? "grad_y" : "y"), py::arg("layers"), py::arg("buffer"), py::arg("depth"),
        py::arg("spill_at"), py::arg("op"), py::arg("scratch"),
        reverse ? "Undo K steps of a reversible stack and differentiate them (revrnn/reversible.h:\n"
                  "rev_backward_chunk); see rev_forward_chunk for the arguments."
                : "K steps of a reversible stack forward (revrnn/reversible.h: RevChunk, RevLayer): layers\n"
                  "lists 23 addresses per layer, buffer 6, scratch 7 (see csrc/chunks.h).");
  }
  m.def("nru_work_size", [](int64_t k, int64_t M) { return nru::work_size(k, M); }, py::arg("k"), py::arg("M"),
        "Scratch elements per row of an NRU chunk with k heads of memory size M.");
  for (const bool backward : {false, true}) {
    const char* name = backward ? "nru_backward" : "nru_forward";
    m.def(
        name,
        [r, to_where, name, backward](DType dtype, const W& where, int64_t K, int64_t B, int64_t H, int64_t M,
                                      int64_t k, bool relu, std::optional<double> clamp, double eps, bool keep,
                                      const Addresses& addresses) {
          const Where w = to_where(name, where);
          if (dtype == DType::float32)
            run_nru<float>(*r, backward, w, K, B, H, M, k, relu, clamp, eps, keep, addresses);
          else
            run_nru<double>(*r, backward, w, K, B, H, M, k, relu, clamp, eps, keep, addresses);
        },
        py::arg("dtype"), py::arg(where_name), py::arg("K"), py::arg("B"), py::arg("H"), py::arg("M"), py::arg("k"),
        py::arg("relu"), py::arg("clamp"), py::arg("eps"), py::arg("keep"), py::arg("addresses"),
        "The NRU's chunk (revrnn/nru.h: NruChunk); addresses: 13, in the order of run_nru\n"
        "(csrc/chunks.h); clamp: the memory clamp or None.");
  }
  for (const bool backward : {false, true}) {
    const char* name = backward ? "glstm_sparse_backward" : "glstm_sparse_forward";
    m.def(
        name,
        [r, to_where, name, backward](DType dtype, const W& where, int64_t K, int64_t B, int64_t H, int64_t I,
                                      const Addresses& addresses) {
          const Where w = to_where(name, where);
          if (dtype == DType::float32)
            run_glstm_sparse<float>(*r, backward, w, K, B, H, I, addresses);
          else
            run_glstm_sparse<double>(*r, backward, w, K, B, H, I, addresses);
        },
        py::arg("dtype"), py::arg(where_name), py::arg("K"), py::arg("B"), py::arg("H"), py::arg("I"),
        py::arg("addresses"),
        "The g-LSTM's sparse chunk (revrnn/glstm_sparse.h); addresses: 25, in the order of\n"
        "run_glstm_sparse (csrc/chunks.h).");
  }
}

}  // namespace bindings
}  // namespace revrnn
