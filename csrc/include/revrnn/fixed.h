// The integer core of the reversible cells, one element at a time, host and device: the
// fixed-point formats, the quantisers, and the exactly reversible multiply and divide through
// the information buffer with its spill and pop. Bit for bit what
// revrnn/cells/reversible/fixed.py and buffer.py do with torch ops (spec reversible.md §2), so
// that given the same gates every backend takes the same integer trajectory.
//
// int64 arithmetic that can leave the range wraps, as torch's does: it goes through uint64,
// where wrapping is defined (a signed overflow would be undefined behaviour in C++).
#pragma once

#include "revrnn/common.h"

namespace revrnn {
namespace fixed {

constexpr int kHiddenBits = 23;  // fractional bits of a state
constexpr int kGateBits = 10;    // a gate is n / 1024
constexpr int kWordBits = 53;    // a current word stays below 2**53; bits 53.. of a spilled one tag it
constexpr int64_t kGateOne = int64_t(1) << kGateBits;
constexpr int64_t kGateLow = kGateOne - 1;
constexpr int64_t kWordMask = (int64_t(1) << kWordBits) - 1;

REVRNN_HD int64_t wrap_add(int64_t a, int64_t b) { return int64_t(uint64_t(a) + uint64_t(b)); }
REVRNN_HD int64_t wrap_sub(int64_t a, int64_t b) { return int64_t(uint64_t(a) - uint64_t(b)); }
REVRNN_HD int64_t wrap_mul(int64_t a, int64_t b) { return int64_t(uint64_t(a) * uint64_t(b)); }

// The value of a state (the scaling by 2**-23 is exact).
template <typename T>
REVRNN_HD T to_float(int64_t h) {
  return T(h) * T(1.0 / double(int64_t(1) << kHiddenBits));
}

// A float update term in fixed point, 0 on an inactive row; NaN counts as 0 and the clamp to
// [-1, 1] (|u| <= 1 by construction) keeps any float overflow from wrapping a state.
template <typename T>
REVRNN_HD int64_t quantise_update(T u, bool active) {
  const T c = u != u ? T(0) : (u < T(-1) ? T(-1) : (u > T(1) ? T(1) : u));
  return active ? int64_t(rint_(c * T(int64_t(1) << kHiddenBits))) : 0;
}

// n = round(1024 z) clamped to [2**(10-k), 1024]: the growth bound of multiply() holds
// whatever the float rounding. (z is clamped to [0, 2] first only so that the conversion is
// defined; the result is the same.)
template <typename T>
REVRNN_HD int64_t quantise_gate(T z, int forget_bits) {
  const int64_t lo = kGateOne >> forget_bits;
  const T c = z != z ? T(0) : (z < T(0) ? T(0) : (z > T(2) ? T(2) : z));
  const int64_t n = int64_t(rint_(c * T(kGateOne)));
  return n < lo ? lo : (n > kGateOne ? kGateOne : n);
}

// The factor a state is actually multiplied by: n / 1024, and 1 without forgetting (k = 0 clamps
// n to [1024, 1024]). The same value as quantise_gate(z) / 1024, computed in floating point
// and without branches so that loops over it vectorise.
template <typename T>
REVRNN_HD T gate_value(T z, int forget_bits) {
  const T lo = T(kGateOne >> forget_bits), one = T(kGateOne);
  const T c = z != z ? T(0) : (z < T(0) ? T(0) : (z > T(2) ? T(2) : z));
  const T n = rint_(c * one);
  return (n < lo ? lo : (n > one ? one : n)) / one;
}

// One reversible stack (the information buffer) as its elements see it: element e's current
// word, its spilled words at stack[level * stride + e] (depth levels) and how many it holds.
struct Buffer {
  int64_t* word;
  int64_t* stack;
  int64_t* height;
  int64_t depth, stride;
  int64_t spill_at;     // a word this large spills before the next multiply
  double* bits;         // forward: each element's information cost so far, or null
  const double* costs;  // forward: costs[n] = 10 - log2(n)
  uint8_t* bad;         // reverse: set when a pop finds a non-zero word (an inexact reverse)
};

// h * n / 1024 exactly, plus the update q: the digit the division discards goes into the word,
// first spilling a full word tagged with the multiply's index `op` in its chunk.
REVRNN_HD int64_t multiply(const Buffer& f, int64_t e, int64_t op, int64_t h, int64_t n, int64_t q) {
  int64_t w = f.word[e];
  if (w >= f.spill_at) {
    const int64_t k = f.height[e];
    f.stack[(k < f.depth - 1 ? k : f.depth - 1) * f.stride + e] = w | (op << kWordBits);
    f.height[e] = k + 1;
    w = 0;
  }
  w = (w << kGateBits) | (h & kGateLow);
  const int64_t out = wrap_add(wrap_mul(h >> kGateBits, n), w % n);
  f.word[e] = w / n;
  if (f.bits) f.bits[e] += f.costs[n];
  return wrap_add(out, q);
}

// The exact inverse of multiply() with the same n, q and op: subtracts q, divides, and pops
// the word spilled at that multiply. Divides only non-negative numbers (c < 0 is written
// -a - 1), so the floor is the same whatever a backend's division rounds to.
REVRNN_HD int64_t divide(const Buffer& f, int64_t e, int64_t op, int64_t h, int64_t n, int64_t q) {
  const int64_t c = wrap_sub(h, q);
  const bool neg = c < 0;
  const int64_t a = neg ? ~c : c;
  const int64_t quot = a / n, rem = a - quot * n;
  int64_t w = wrap_add(wrap_mul(f.word[e], n), neg ? n - 1 - rem : rem);
  const int64_t out = wrap_add(wrap_mul(neg ? -quot - 1 : quot, kGateOne), w & kGateLow);
  w >>= kGateBits;
  const int64_t k = f.height[e];
  const int64_t top = f.stack[(k > 0 ? k - 1 : 0) * f.stride + e];
  const bool pop = k > 0 && (top >> kWordBits) == op;
  if (pop && w != 0) *f.bad = 1;  // a word restarts at 0 after a spill
  f.word[e] = pop ? (top & kWordMask) : w;
  f.height[e] = k - (pop ? 1 : 0);
  return out;
}

// One exact update of a state v forward (MUL(v, z) + q through the buffer) or back (its
// inverse), with the gate z quantised here; without forgetting (k = 0) v + q or v - q.
template <bool kForward, typename T>
REVRNN_HD int64_t update(const Buffer& f, int64_t e, int64_t op, int64_t v, T z, int forget_bits, int64_t q) {
  if (!forget_bits) return kForward ? wrap_add(v, q) : wrap_sub(v, q);
  const int64_t n = quantise_gate(z, forget_bits);
  return kForward ? multiply(f, e, op, v, n, q) : divide(f, e, op, v, n, q);
}

}  // namespace fixed
}  // namespace revrnn
