// The reversible loop instantiated for every reversible cell, float and double, on the CPU policy.
#include "cpu/reversible.h"

#include "cpu/device.h"
#include "revrnn/cells.h"

namespace revrnn {
namespace cpu {
namespace {

template <class Cell, typename T>
void forward(int threads, const RevChunk<T>& c) {
  CpuDevice dev{threads};
  rev_forward_chunk<Cell>(dev, c);
}

template <class Cell, typename T>
void backward(int threads, const RevChunk<T>& c) {
  CpuDevice dev{threads};
  rev_backward_chunk<Cell>(dev, c);
}

template <class Cell>
constexpr RevEntry entry(const char* name) {
  return {name, Cell::kStates, Cell::kBlocks, Cell::kMultiplies, Cell::kActs, Cell::kBlocks == 3,
          forward<Cell, float>, forward<Cell, double>, backward<Cell, float>, backward<Cell, double>};
}

#define REVRNN_ENTRY(name, Cell) entry<Cell>(#name),
const RevEntry kCells[] = {REVRNN_REVERSIBLE_CELLS(REVRNN_ENTRY)};
#undef REVRNN_ENTRY

}  // namespace

const RevEntry* find_reversible(const std::string& name) {
  for (const RevEntry& e : kCells)
    if (name == e.name) return &e;
  return nullptr;
}

std::string reversible_names() {
  std::string out;
  for (const RevEntry& e : kCells) out += (out.empty() ? "" : ", ") + std::string(e.name);
  return out;
}

void exact_elements(bool forward, int64_t rows, int64_t G, const int64_t* h, const int64_t* n, const int64_t* q,
                    const uint8_t* active, int64_t* out, const fixed::Buffer& buf, int64_t op) {
  for (int64_t b = 0; b < rows; ++b)
    for (int64_t j = 0; j < G; ++j) {
      const int64_t e = b * G + j, qe = q ? q[e] : 0;
      if (active && !active[b])
        out[e] = h[e];
      else
        out[e] = forward ? fixed::multiply(buf, e, op, h[e], n[e], qe) : fixed::divide(buf, e, op, h[e], n[e], qe);
    }
}

}  // namespace cpu
}  // namespace revrnn
