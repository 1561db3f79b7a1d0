// The executor instantiated for every cell with a CPU implementation, float and double.
#include "cpu/executor.h"

#include <type_traits>

#include "cpu/device.h"
#include "revrnn/cells.h"

namespace revrnn {
namespace cpu {
namespace {

template <class Cell, typename T>
void forward(int threads, const ChunkForward<T>& c) {
  CpuDevice dev{threads};
  forward_chunk<Cell>(dev, c);
}

template <class Cell, typename T>
void backward(int threads, const ChunkBackward<T>& c) {
  CpuDevice dev{threads};
  backward_chunk<Cell>(dev, c);
}

// Cell::kRecBias, Cell::kAux and Cell::kUnit where the cell declares them, else false.
template <class Cell, class = void>
struct NeedsRecBias : std::false_type {};
template <class Cell>
struct NeedsRecBias<Cell, std::void_t<decltype(Cell::kRecBias)>> : std::bool_constant<Cell::kRecBias> {};
template <class Cell, class = void>
struct NeedsAux : std::false_type {};
template <class Cell>
struct NeedsAux<Cell, std::void_t<decltype(Cell::kAux)>> : std::bool_constant<Cell::kAux> {};
template <class Cell, class = void>
struct NeedsUnit : std::false_type {};
template <class Cell>
struct NeedsUnit<Cell, std::void_t<decltype(Cell::kUnit)>> : std::bool_constant<Cell::kUnit> {};

template <class Cell, class = void>
struct NeedsParams : std::false_type {};
template <class Cell>
struct NeedsParams<Cell, std::void_t<decltype(Cell::kParams)>> : std::bool_constant<Cell::kParams> {};

template <class Cell>
constexpr CellEntry entry(const char* name) {
  return {name, Cell::kStates, Cell::kPhases, Cell::kGates, Cell::kXpGates, Cell::kActs, Cell::kRecIsXp, NeedsRecBias<Cell>::value,
          NeedsAux<Cell>::value,
          NeedsUnit<Cell>::value, HasFeedback<Cell>::value, HasProj<Cell>::value, NeedsParams<Cell>::value,
          forward<Cell, float>, forward<Cell, double>, backward<Cell, float>, backward<Cell, double>};
}

#define REVRNN_ENTRY(name, Cell) entry<Cell>(#name),
const CellEntry kCells[] = {REVRNN_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY

}  // namespace

const CellEntry* find_cell(const std::string& name) {
  for (const CellEntry& e : kCells)
    if (name == e.name) return &e;
  return nullptr;
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

std::string cell_names() {
  std::string out;
  for (const CellEntry& e : kCells) out += (out.empty() ? "" : ", ") + std::string(e.name);
  return out;
}

}  // namespace cpu
}  // namespace revrnn
