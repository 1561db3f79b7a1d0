// The executor's loops instantiated for every cell, float and double, on the CUDA policy.
#include "cuda/device.cuh"
#include "cuda/executor.h"
#include "revrnn/cells.h"

namespace revrnn {
namespace cuda {
namespace {

template <class Cell, typename T>
struct Run {
  static void forward(const Where& w, const ChunkForward<T>& c) {
    CudaDevice dev(w);
    forward_chunk<Cell>(dev, c);
    dev.finish("forward_chunk");
  }
  static void backward(const Where& w, const ChunkBackward<T>& c) {
    CudaDevice dev(w);
    backward_chunk<Cell>(dev, c);
    dev.finish("backward_chunk");
  }
  static void rev_forward(const Where& w, const RevChunk<T>& c) {
    CudaDevice dev(w);
    rev_forward_chunk<Cell>(dev, c);
    dev.finish("rev_forward_chunk");
  }
  static void rev_backward(const Where& w, const RevChunk<T>& c) {
    CudaDevice dev(w);
    rev_backward_chunk<Cell>(dev, c);
    dev.finish("rev_backward_chunk");
  }
};

#define REVRNN_ENTRY(name, Cell) cell_entry<Run, Cell>(#name),
const CellEntry kCells[] = {REVRNN_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY
#define REVRNN_ENTRY(name, Cell) rev_entry<Run, Cell>(#name),
const RevEntry kReversible[] = {REVRNN_REVERSIBLE_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY

std::string not_ready() { return cublas::loaded() ? "" : "cuBLAS is not loaded (call load_cublas first)"; }

}  // namespace

const Registry& registry() {
  static const Registry r{kCells, sizeof(kCells) / sizeof(kCells[0]), kReversible,
                          sizeof(kReversible) / sizeof(kReversible[0]), not_ready};
  return r;
}

}  // namespace cuda
}  // namespace revrnn
