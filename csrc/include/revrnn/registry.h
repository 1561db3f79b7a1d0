// The cells an extension module runs, one entry per cell of revrnn/cells.h, with the functions
// that run a chunk of it on that module's device (CPU: csrc/cpu/executor.cpp; CUDA:
// csrc/cuda/executor.cu). The pybind11 bindings of both modules read these tables
// (csrc/chunks.h), so a cell's layout and checks are stated once.
#pragma once

#include <atomic>
#include <cstddef>
#include <string>
#include <type_traits>

#include "revrnn/cells.h"
#include "revrnn/executor.h"
#include "revrnn/glstm_sparse.h"
#include "revrnn/nru.h"
#include "revrnn/reversible.h"

namespace revrnn {

// Where a chunk runs: the CPU team's size, or the CUDA device, the caller's stream and the
// cuBLAS workspace (allocated by the caller, so that its allocator accounts for it).
struct Where {
  int threads = 1;
  int device = 0;
  void* stream = nullptr;
  void* workspace = nullptr;
  std::size_t workspace_bytes = 0;
};

// Whether the devices of this module run their GEMMs (set_gemms in csrc/chunks.h). Off only in
// the kernel benchmark, which times the pointwise passes alone: a skipped GEMM zeroes its output
// where it would overwrite it (beta 0), so the passes read zeros, not stale memory; results are
// meaningless while it is off.
inline std::atomic<bool>& gemms_enabled() {
  static std::atomic<bool> on{true};
  return on;
}

// A cell of the executor's loop (revrnn/executor.h) and the shape of its buffers.
struct CellEntry {
  const char* name;
  int states, phases, gates, xp_gates, acts;  // state tensors; GEMM phases per step; G = gates * H
                                              // columns of the recurrent GEMMs, xp_gates * H of the
                                              // projection; A = acts * H kept per step
  bool rec_is_xp;           // d rec and d xp are one buffer
  bool rec_bias;            // reads b_rec, which must not be null
  bool aux;                 // reads a per-sequence operand (ChunkForward::aux)
  bool unit;                // reads a per-step, per-unit operand (ChunkForward::unit)
  bool feedback;            // its recurrent GEMM reads g(h) (ChunkForward::fb)
  bool proj;                // h is mid W_hr^T, of P features (ChunkForward::P, w_hr)
  bool params;              // reads parameters beyond the GEMMs' (ChunkForward::params) and
                            // accumulates their gradient (ChunkBackward::dparams)
  void (*forward_f32)(const Where&, const ChunkForward<float>&);
  void (*forward_f64)(const Where&, const ChunkForward<double>&);
  void (*backward_f32)(const Where&, const ChunkBackward<float>&);
  void (*backward_f64)(const Where&, const ChunkBackward<double>&);
};

// A reversible cell of the stack's loop (revrnn/reversible.h).
struct RevEntry {
  const char* name;
  int states, blocks, multiplies, acts;  // state tensors; gate blocks and exact multiplies of a
                                         // half-update; act columns in units of G
  bool reset;                            // a second GEMM on r * hb (RevLayer::rh is recorded)
  void (*forward_f32)(const Where&, const RevChunk<float>&);
  void (*forward_f64)(const Where&, const RevChunk<double>&);
  void (*backward_f32)(const Where&, const RevChunk<float>&);
  void (*backward_f64)(const Where&, const RevChunk<double>&);
};

// Cell::kRecBias, kAux, kUnit, kParams where the cell declares them, else false.
#define REVRNN_FLAG(Trait, member)                                                   \
  template <class Cell, class = void>                                                \
  struct Trait : std::false_type {};                                                 \
  template <class Cell>                                                              \
  struct Trait<Cell, std::void_t<decltype(Cell::member)>> : std::bool_constant<Cell::member> {};
REVRNN_FLAG(NeedsRecBias, kRecBias)
REVRNN_FLAG(NeedsAux, kAux)
REVRNN_FLAG(NeedsUnit, kUnit)
REVRNN_FLAG(NeedsParams, kParams)
#undef REVRNN_FLAG

// Run<Cell, T> is a device's runner: static forward/backward (a chunk of the executor's loop)
// or rev_forward/rev_backward (of the reversible loop), each taking (const Where&, chunk).
template <template <class, typename> class Run, class Cell>
constexpr CellEntry cell_entry(const char* name) {
  return {name, Cell::kStates, Cell::kPhases, Cell::kGates, Cell::kXpGates, Cell::kActs, Cell::kRecIsXp,
          NeedsRecBias<Cell>::value, NeedsAux<Cell>::value, NeedsUnit<Cell>::value, HasFeedback<Cell>::value,
          HasProj<Cell>::value, NeedsParams<Cell>::value,
          Run<Cell, float>::forward, Run<Cell, double>::forward, Run<Cell, float>::backward, Run<Cell, double>::backward};
}

template <template <class, typename> class Run, class Cell>
constexpr RevEntry rev_entry(const char* name) {
  return {name, Cell::kStates, Cell::kBlocks, Cell::kMultiplies, Cell::kActs, Cell::kBlocks == 3,
          Run<Cell, float>::rev_forward, Run<Cell, double>::rev_forward, Run<Cell, float>::rev_backward,
          Run<Cell, double>::rev_backward};
}

// What a module runs: its tables (one per device, from REVRNN_CELLS and REVRNN_REVERSIBLE_CELLS),
// why it cannot run yet ("" when it can: its GEMM library is loaded), and the loops of their own.
struct Registry {
  const CellEntry* cells;
  std::size_t n_cells;
  const RevEntry* reversible;
  std::size_t n_reversible;
  std::string (*not_ready)();
  // the NRU's loop (revrnn/nru.h) and the g-LSTM's sparse chunk (revrnn/glstm_sparse.h), forward
  // or backward
  void (*nru_f32)(const Where&, bool backward, const NruChunk<float>&);
  void (*nru_f64)(const Where&, bool backward, const NruChunk<double>&);
  void (*glstm_sparse_f32)(const Where&, bool backward, const SparseChunk<float>&);
  void (*glstm_sparse_f64)(const Where&, bool backward, const SparseChunk<double>&);

  const CellEntry* cell(const std::string& name) const { return find(cells, n_cells, name); }
  const RevEntry* rev(const std::string& name) const { return find(reversible, n_reversible, name); }
  std::string cell_names() const { return names(cells, n_cells); }
  std::string rev_names() const { return names(reversible, n_reversible); }

 private:
  template <class E>
  static const E* find(const E* table, std::size_t n, const std::string& name) {
    for (std::size_t i = 0; i < n; ++i)
      if (name == table[i].name) return &table[i];
    return nullptr;
  }
  template <class E>
  static std::string names(const E* table, std::size_t n) {
    std::string out;
    for (std::size_t i = 0; i < n; ++i) out += (i ? ", " : "") + std::string(table[i].name);
    return out;
  }
};

// The runners of a device policy: Device is constructed from a Where, runs a loop, and its
// finish(fn) throws what failed, naming the call.
template <class Device>
struct Runs {
  template <class Cell, typename T>
  struct Run {
    static void forward(const Where& w, const ChunkForward<T>& c) {
      Device dev(w);
      forward_chunk<Cell>(dev, c);
      dev.finish("forward_chunk");
    }
    static void backward(const Where& w, const ChunkBackward<T>& c) {
      Device dev(w);
      backward_chunk<Cell>(dev, c);
      dev.finish("backward_chunk");
    }
    static void rev_forward(const Where& w, const RevChunk<T>& c) {
      Device dev(w);
      rev_forward_chunk<Cell>(dev, c);
      dev.finish("rev_forward_chunk");
    }
    static void rev_backward(const Where& w, const RevChunk<T>& c) {
      Device dev(w);
      rev_backward_chunk<Cell>(dev, c);
      dev.finish("rev_backward_chunk");
    }
  };

  template <typename T>
  static void nru(const Where& w, bool backward, const NruChunk<T>& c) {
    Device dev(w);
    if (backward)
      nru_backward(dev, c);
    else
      nru_forward(dev, c);
    dev.finish(backward ? "nru_backward" : "nru_forward");
  }

  template <typename T>
  static void glstm_sparse(const Where& w, bool backward, const SparseChunk<T>& c) {
    Device dev(w);
    if (backward)
      glstm_sparse_backward(dev, c);
    else
      glstm_sparse_forward(dev, c);
    dev.finish(backward ? "glstm_sparse_backward" : "glstm_sparse_forward");
  }
};

// The registry of Device: every cell of revrnn/cells.h, float and double.
template <class Device>
const Registry& device_registry(std::string (*not_ready)()) {
#define REVRNN_ENTRY(name, Cell) cell_entry<Runs<Device>::template Run, Cell>(#name),
  static const CellEntry cells[] = {REVRNN_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY
#define REVRNN_ENTRY(name, Cell) rev_entry<Runs<Device>::template Run, Cell>(#name),
  static const RevEntry reversible[] = {REVRNN_REVERSIBLE_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY
  static const Registry r{cells,
                          sizeof(cells) / sizeof(cells[0]),
                          reversible,
                          sizeof(reversible) / sizeof(reversible[0]),
                          not_ready,
                          Runs<Device>::template nru<float>,
                          Runs<Device>::template nru<double>,
                          Runs<Device>::template glstm_sparse<float>,
                          Runs<Device>::template glstm_sparse<double>};
  return r;
}

}  // namespace revrnn
