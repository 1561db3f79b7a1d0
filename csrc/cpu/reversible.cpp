#include "cpu/reversible.h"

namespace revrnn {
namespace cpu {

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
