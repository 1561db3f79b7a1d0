// The time loop of a reversible stack (RevGRU, RevLSTM: revrnn/revgru.h, revrnn/revlstm.h) over
// one chunk, written once over a device policy (revrnn/executor.h says what a policy provides).
// t-major as revrnn/cells/reversible/function.py: at step t every layer, bottom up, half 1 then
// half 2; one information buffer for the whole stack. The reverse walks the chunk back, every
// layer top down, half 2 then half 1, undoing each half-update with the gates it recomputes and
// differentiating it on the spot; it records, per step, what the weight gradients need (the
// pre-activation gradients and the GEMMs' inputs), for one GEMM per chunk on the caller's side.
// A cell's retreat leaves the chain rule through hb (d hb += da W_hh[first kHbBlocks blocks]) to
// the loop.
//
// The team splits the batch rows, not the units: rows are independent in a recurrence, so each
// member runs the whole chunk on its rows without ever meeting the others (no barriers); a
// batch of one row runs on one thread. Bit-exact reversal needs the reverse's gates to be the
// forward's: both passes run the same element functions over the same rows, and every GEMM reads
// its operands at the same addresses, so the thread count must be the same too (the caller keeps
// it).
#pragma once

#include "revrnn/revgru.h"
#include "revrnn/revlstm.h"

namespace revrnn {

template <typename T>
struct RevLayer {
  const T* w_ih[2];            // (R, H) for the layers above the first, else null
  const T* w_ih_t[2];          // (H, R): w_ih transposed, the form the projection's GEMM reads
  const T* w_hh[2];            // (R, G)
  const T* w_hh_t[2];          // (G, R): w_hh transposed, the form the gates' GEMMs read
  const T* bias[2];            // (R) or null, with w_ih
  const T* drop;               // (B, H): locked dropout on the layer's input, or null
  int64_t* ints[kMaxStates];   // (B, H) fixed-point states: in, at the chunk's start; out, at its end
  T* hf;                       // (B, H) the float value of ints[0], kept with it
  // reverse only
  T* dstate[kMaxStates];       // (B, H): in, gradients of the end states; out, of the start ones
  T* da[2];                    // (K, B, R) per half: pre-activation gradients
  T* hb[2];                    // (K, B, G) per half: the recurrent GEMM's input hb
  T* rh[2];                    // (K, B, G) per half, RevGRU: the candidate GEMM's input r * hb
  T* xin;                      // (K, B, H) above the first layer: the (dropped) layer input
};

template <typename T>
struct RevChunk {
  int64_t K, B, G, L;
  int forget_bits;
  T max_forget;
  const T* xp0;                // (K, B, 2R): the first layer's projections, half 1 then half 2
  const uint8_t* mask;         // (K, B) or null
  RevLayer<T>* layers;         // L of them
  fixed::Buffer buf;           // word == null without forgetting
  int64_t op;                  // index of the chunk's first multiply in the buffer chunk
  T* y;                        // forward: (K, B, H) the top layer's outputs, 0 on ended rows
  const T* grad_y;             // reverse: (K, B, H) their gradients
  // scratch
  T* pre;                      // (B, R)
  T* act;                      // (B, A G), A = Cell::kActs
  T* rh;                       // (B, G)
  T* drh;                      // (B, G)
  T* xp;                       // (B, 2R), above the first layer
  T* xin;                      // (B, H), above the first layer
  T* din;                      // (B, H), above the first layer
};

namespace rev {

// The element functions of the loop; j runs over the G units of a half, and those that touch
// full (B, H) rows do both halves' columns j and G + j.
template <typename T>
struct Dropped {  // xin = h below * drop
  const T* h;
  const T* drop;
  T* xin;
  int64_t G;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
    for (int64_t c = j; c < 2 * G; c += G) {
      const int64_t k = b * 2 * G + c;
      xin[k] = drop ? h[k] * drop[k] : h[k];
    }
  }
};

template <typename T>
struct FillBias {  // xp's columns of the slice's units = bias or 0, before the GEMM adds x W^T
  const T* bias1;
  const T* bias2;
  T* xp;
  int64_t G, R, blocks;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const {
    for (int64_t q = 0; q < blocks; ++q) {
      xp[b * 2 * R + q * G + j] = bias1 ? bias1[q * G + j] : T(0);
      xp[b * 2 * R + R + q * G + j] = bias2 ? bias2[q * G + j] : T(0);
    }
  }
};

template <typename T>
struct Output {  // y = h, 0 on ended rows
  const T* h;
  T* y;
  int64_t G;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
    for (int64_t c = j; c < 2 * G; c += G) y[b * 2 * G + c] = valid ? h[b * 2 * G + c] : T(0);
  }
};

template <typename T>
struct AddGrad {  // d h += d y on running rows; drop scales it where given (d of a dropped input)
  T* dh;
  const T* dy;
  const T* drop;
  int64_t G;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool valid) const {
    for (int64_t c = j; c < 2 * G; c += G) {
      const int64_t k = b * 2 * G + c;
      const T d = drop ? dy[k] * drop[k] : dy[k];
      dh[k] += valid ? d : T(0);
    }
  }
};

template <typename T>
struct Copy {  // dst (B, G) contiguous = src (B, G) rows ss apart
  const T* src;
  int64_t ss;
  T* dst;
  int64_t G;
  REVRNN_HD void operator()(int64_t b, int64_t j, bool) const { dst[b * G + j] = src[b * ss + j]; }
};

// Work per step and layer, which sizes the team: the same in both passes.
template <class Cell, typename T>
int64_t work(const RevChunk<T>& c) {
  return c.B * 2 * Cell::kBlocks * c.G * c.G;
}

// The projection of layer l > 0 from the float h of the layer below, into c.xp (and c.xin), for
// rows [r0, r0 + n).
template <class Cell, class Device, typename T>
void project(Device& dev, const RevChunk<T>& c, int64_t l, int64_t r0, int64_t n) {
  const RevLayer<T>& ly = c.layers[l];
  const int64_t G = c.G, H = 2 * G, R = Cell::kBlocks * G;
  const Slice all{0, G};
  T* xin = c.xin + r0 * H;
  T* xp = c.xp + r0 * 2 * R;
  dev.pointwise(n, all, nullptr, Dropped<T>{c.layers[l - 1].hf + r0 * H, ly.drop ? ly.drop + r0 * H : nullptr, xin, G});
  dev.pointwise(n, all, nullptr, FillBias<T>{ly.bias[0], ly.bias[1], xp, G, R, Cell::kBlocks});
  for (int a = 0; a < 2; ++a)
    dev.gemm(false, false, n, R, H, T(1), static_cast<const T*>(xin), H, ly.w_ih_t[a], R, T(1), xp + a * R, 2 * R);
}

// Half a of layer l at step t for rows [r0, r0 + n): its operands in the loop's buffers. xp is
// step t's projection, every row.
template <class Cell, typename T>
Half<T> half(const RevChunk<T>& c, int64_t t, int64_t l, int a, const T* xp, int64_t r0, int64_t n) {
  const RevLayer<T>& ly = c.layers[l];
  const int64_t G = c.G, H = 2 * G, R = Cell::kBlocks * G, own = r0 * H + a * G, other = r0 * H + (1 - a) * G;
  Half<T> s{};
  s.B = n;
  s.G = G;
  s.H = H;
  s.R = R;
  s.forget_bits = c.forget_bits;
  s.max_forget = c.max_forget;
  s.xp = xp + r0 * 2 * R + a * R;
  s.xs = 2 * R;
  s.w_hh = ly.w_hh[a];
  s.w_hh_t = ly.w_hh_t[a];
  s.hb = ly.hf + other;
  for (int k = 0; k < Cell::kStates; ++k) s.own[k] = ly.ints[k] + own;
  s.hf = ly.hf + own;
  s.mask = c.mask ? c.mask + t * c.B + r0 : nullptr;
  s.pre = c.pre + r0 * R;
  s.act = c.act + r0 * Cell::kActs * G;
  s.rh = c.rh ? c.rh + r0 * G : nullptr;
  s.buf = c.buf;
  if (s.buf.word) {  // the rows' elements; a stack level still spans every row
    s.buf.word += r0 * G;
    s.buf.stack += r0 * G;
    s.buf.height += r0 * G;
    if (s.buf.bits) s.buf.bits += r0 * G;
  }
  s.op = c.op + (t * c.L + l) * 2 * Cell::kMultiplies + a * Cell::kMultiplies;
  if (ly.dstate[0]) {
    for (int k = 0; k < Cell::kStates; ++k) s.dh[k] = ly.dstate[k] + own;
    s.dhb = ly.dstate[0] + other;
    s.da = ly.da[a] + (t * c.B + r0) * R;
    s.drh = c.drh ? c.drh + r0 * G : nullptr;
  }
  return s;
}

}  // namespace rev

template <class Cell, class Device, typename T>
void rev_forward_chunk(Device& dev, const RevChunk<T>& c) {
  const int64_t G = c.G, H = 2 * G, R = Cell::kBlocks * G;
  const Slice all{0, G};
  dev.parallel(c.B, rev::work<Cell>(c), [&](Slice rows) {
    const int64_t r0 = rows.j0, n = rows.size();
    for (int64_t t = 0; t < c.K; ++t) {
      for (int64_t l = 0; l < c.L; ++l) {
        const T* xp = c.xp0 + t * c.B * 2 * R;
        if (l > 0) {
          rev::project<Cell>(dev, c, l, r0, n);
          xp = c.xp;
        }
        for (int a = 0; a < 2; ++a) Cell::advance(dev, rev::half<Cell>(c, t, l, a, xp, r0, n));
      }
      dev.pointwise(n, all, c.mask ? c.mask + t * c.B + r0 : nullptr,
                    rev::Output<T>{c.layers[c.L - 1].hf + r0 * H, c.y + (t * c.B + r0) * H, G});
    }
  }, 1);  // slices of one row
}

template <class Cell, class Device, typename T>
void rev_backward_chunk(Device& dev, const RevChunk<T>& c) {
  const int64_t G = c.G, H = 2 * G, R = Cell::kBlocks * G;
  const Slice all{0, G};
  dev.parallel(c.B, rev::work<Cell>(c), [&](Slice rows) {
    const int64_t r0 = rows.j0, n = rows.size();
    for (int64_t t = c.K - 1; t >= 0; --t) {
      const uint8_t* mask = c.mask ? c.mask + t * c.B + r0 : nullptr;
      dev.pointwise(n, all, mask,
                    rev::AddGrad<T>{c.layers[c.L - 1].dstate[0] + r0 * H, c.grad_y + (t * c.B + r0) * H, nullptr, G});
      for (int64_t l = c.L - 1; l >= 0; --l) {
        const RevLayer<T>& ly = c.layers[l];
        const T* xp = c.xp0 + t * c.B * 2 * R;
        if (l > 0) {
          rev::project<Cell>(dev, c, l, r0, n);
          xp = c.xp;
          for (int64_t off = 0; off < H; off += G)
            dev.pointwise(n, all, nullptr,
                          rev::Copy<T>{c.xin + r0 * H + off, H, ly.xin + (t * c.B + r0) * H + off, H});
        }
        for (int a = 1; a >= 0; --a) {
          const Half<T> s = rev::half<Cell>(c, t, l, a, xp, r0, n);
          dev.pointwise(n, all, nullptr, rev::Copy<T>{s.hb, H, ly.hb[a] + (t * c.B + r0) * G, G});
          Cell::retreat(dev, s);
          if (ly.rh[a]) dev.pointwise(n, all, nullptr, rev::Copy<T>{s.rh, G, ly.rh[a] + (t * c.B + r0) * G, G});
          half_grad_hb(dev, s, 0, Cell::kHbBlocks * G);  // d hb += da W_hh
        }
        if (l > 0) {  // d of the input: the layer below's d h += drop * (da_1 W_ih1 + da_2 W_ih2)
          T* din = c.din + r0 * H;
          for (int a = 0; a < 2; ++a)
            dev.gemm(false, false, n, H, R, T(1), static_cast<const T*>(ly.da[a] + (t * c.B + r0) * R), R, ly.w_ih[a],
                     H, T(a), din, H);
          dev.pointwise(n, all, nullptr,
                        rev::AddGrad<T>{c.layers[l - 1].dstate[0] + r0 * H, din, ly.drop ? ly.drop + r0 * H : nullptr, G});
        }
      }
    }
  }, 1);  // slices of one row
}

}  // namespace revrnn
