// The CPU executor's entry points: the registry of every cell (revrnn/registry.h) on the CPU
// device policy, and the loops of their own (the g-LSTM's sparse chunk, the NRU). Framework-free:
// pointers and sizes only.
#pragma once

#include "revrnn/glstm_sparse.h"
#include "revrnn/nru.h"
#include "revrnn/registry.h"

namespace revrnn {
namespace cpu {

// Every cell of revrnn/cells.h, float and double, on the CPU; ready once a BLAS is loaded.
const Registry& registry();

// The g-LSTM's sparse chunk (revrnn/glstm_sparse.h), forward or backward.
template <typename T>
void glstm_sparse(bool backward, const SparseChunk<T>& c);

// The NRU's chunk (revrnn/nru.h), forward or backward, on a team of `threads`.
template <typename T>
void nru(bool backward, int threads, const NruChunk<T>& c);

}  // namespace cpu
}  // namespace revrnn
