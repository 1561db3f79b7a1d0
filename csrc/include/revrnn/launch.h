// The CUDA launch geometry of a pointwise pass: blocks of kThreads threads, at most kMaxBlocks of
// them, and a grid-stride loop over the n elements. Host+device code, so that the CPU build can
// run the very loop the kernels run and check that it visits every element exactly once.
#pragma once

#include "revrnn/common.h"

namespace revrnn {
namespace launch {

constexpr int kThreads = 256;
// Grid-stride loops make any grid correct; the cap keeps huge batches within one grid dimension.
constexpr int64_t kMaxBlocks = 65535;

inline unsigned blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return unsigned(b < kMaxBlocks ? (b > 0 ? b : 1) : kMaxBlocks);
}

// The elements thread `thread` of block `block` visits in a grid of `grid` blocks: f(k) for each.
template <class F>
REVRNN_HD void for_each(int64_t n, int64_t block, int64_t thread, int64_t grid, const F& f) {
  for (int64_t k = block * kThreads + thread; k < n; k += grid * kThreads) f(k);
}

}  // namespace launch
}  // namespace revrnn
