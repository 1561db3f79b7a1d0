// The executor's loops instantiated for every cell, float and double, on the CPU policy.
#include "cpu/executor.h"

#include "cpu/blas.h"
#include "cpu/device.h"
#include "revrnn/cells.h"

namespace revrnn {
namespace cpu {
namespace {

template <class Cell, typename T>
struct Run {
  static void forward(const Where& w, const ChunkForward<T>& c) {
    CpuDevice dev{w.threads};
    forward_chunk<Cell>(dev, c);
  }
  static void backward(const Where& w, const ChunkBackward<T>& c) {
    CpuDevice dev{w.threads};
    backward_chunk<Cell>(dev, c);
  }
  static void rev_forward(const Where& w, const RevChunk<T>& c) {
    CpuDevice dev{w.threads};
    rev_forward_chunk<Cell>(dev, c);
  }
  static void rev_backward(const Where& w, const RevChunk<T>& c) {
    CpuDevice dev{w.threads};
    rev_backward_chunk<Cell>(dev, c);
  }
};

#define REVRNN_ENTRY(name, Cell) cell_entry<Run, Cell>(#name),
const CellEntry kCells[] = {REVRNN_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY
#define REVRNN_ENTRY(name, Cell) rev_entry<Run, Cell>(#name),
const RevEntry kReversible[] = {REVRNN_REVERSIBLE_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY

std::string not_ready() { return blas_loaded() ? "" : "no BLAS loaded (call load_blas first)"; }

}  // namespace

const Registry& registry() {
  static const Registry r{kCells, sizeof(kCells) / sizeof(kCells[0]), kReversible,
                          sizeof(kReversible) / sizeof(kReversible[0]), not_ready};
  return r;
}

template <typename T>
void glstm_sparse(bool backward, const SparseChunk<T>& c) {
  CpuDevice dev{1};
  if (backward)
    glstm_sparse_backward(dev, c);
  else
    glstm_sparse_forward(dev, c);
}
template void glstm_sparse<float>(bool, const SparseChunk<float>&);
template void glstm_sparse<double>(bool, const SparseChunk<double>&);

template <typename T>
void nru(bool backward, int threads, const NruChunk<T>& c) {
  CpuDevice dev{threads};
  if (backward)
    nru_backward(dev, c);
  else
    nru_forward(dev, c);
}
template void nru<float>(bool, int, const NruChunk<float>&);
template void nru<double>(bool, int, const NruChunk<double>&);

}  // namespace cpu
}  // namespace revrnn
