// The CPU executor's entry points: a cell by name (the families' headers in revrnn/), a dtype,
// and one chunk's buffers. Framework-free: pointers and sizes only.
#pragma once

#include <string>

#include "revrnn/executor.h"
#include "revrnn/glstm_sparse.h"
#include "revrnn/nru.h"

namespace revrnn {
namespace cpu {

// A cell the executor runs and the shape of its buffers (the constants of its header).
struct CellEntry {
  const char* name;
  int states, phases, gates, xp_gates, acts;  // state tensors; GEMM phases per step
                                              // (revrnn/executor.h); G = gates * H columns of the
                                              // recurrent GEMMs, xp_gates * H of the projection;
                                              // A = acts * H kept per step
  bool rec_is_xp;           // d rec and d xp are one buffer
  bool rec_bias;            // reads b_rec, which must not be null
  bool aux;                 // reads a per-sequence operand (ChunkForward::aux)
  bool unit;                // reads a per-step, per-unit operand (ChunkForward::unit)
  bool feedback;            // its recurrent GEMM reads g(h) (ChunkForward::fb)
  bool proj;                // h is mid W_hr^T, of P features (ChunkForward::P, w_hr)
  bool params;              // reads parameters beyond the GEMMs' (ChunkForward::params) and
                            // accumulates their gradient (ChunkBackward::dparams)
  void (*forward_f32)(int threads, const ChunkForward<float>&);
  void (*forward_f64)(int threads, const ChunkForward<double>&);
  void (*backward_f32)(int threads, const ChunkBackward<float>&);
  void (*backward_f64)(int threads, const ChunkBackward<double>&);
};

// The entry of `name`, or null.
const CellEntry* find_cell(const std::string& name);
// Every cell's name, comma-separated (for error messages).
std::string cell_names();

// The g-LSTM's sparse chunk (revrnn/glstm_sparse.h), forward or backward.
template <typename T>
void glstm_sparse(bool backward, const SparseChunk<T>& c);

// The NRU's chunk (revrnn/nru.h), forward or backward, on a team of `threads`.
template <typename T>
void nru(bool backward, int threads, const NruChunk<T>& c);

}  // namespace cpu
}  // namespace revrnn
