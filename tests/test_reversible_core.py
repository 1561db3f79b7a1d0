"""The integer core of the reversible RNNs: fixed-point states, the exactly reversible multiply
by a quantised gate n / 1024 and its inverse (:mod:`revrnn.cells.reversible.fixed`), and the
information buffer with its per-element spill policy and chunked arena
(:mod:`revrnn.cells.reversible.buffer`).

Spec: ``specs/reversible.md`` §2 and §6 (tests 1, 2, 3, 5, 6, 12, 15). Expected values are
never hard-coded: they come from a plain Python-int reference of Maclaurin's algorithm
(unbounded precision) and a Python simulation of our spill policy (buffer.py docstring).
"""
from __future__ import annotations

import math
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from revrnn.cells.reversible import fixed
from revrnn.cells.reversible.buffer import MAX_CHUNK_OPS, InformationBuffer

I64_MIN, I64_MAX = -(2 ** 63), 2 ** 63 - 1
WORD_LIMIT = 2 ** 53            # fixed.multiply needs word < 2**53
D = fixed.GATE_ONE              # 1024


# ---------------------------------------------------------------------------------------------
# Python-int reference (unbounded precision; spec §2.3 "General form", d = 1024)
# ---------------------------------------------------------------------------------------------
def ref_multiply(c: int, n: int, b: int) -> tuple[int, int]:
    b = b * D + c % D
    c = (c // D) * n + b % n
    return c, b // n


def ref_divide(c: int, n: int, b: int) -> tuple[int, int]:
    b = b * n + c % n
    c = (c // n) * D + b % D
    return c, b // D


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def interesting_h() -> list[int]:
    """Extremes, signs and values next to multiples of 1024 (where the discarded digit wraps)."""
    vals = [0, 1, -1, 2 ** 40, -(2 ** 40), 2 ** 40 - 1, -(2 ** 40) + 1, 2 ** 32, -(2 ** 32),
            2 ** 62, -(2 ** 62), I64_MAX, I64_MIN, I64_MIN + 1, I64_MAX - 1]
    for m in (1, 2, 7, 2 ** 20, 2 ** 30 + 3):
        for off in (-1, 0, 1, 1023, 1024, 1025):
            vals += [m * D + off - 1024, -(m * D) + off - 1024]
    return vals


# ---------------------------------------------------------------------------------------------
# 1. single-op round trip (spec §6 test 1)
# ---------------------------------------------------------------------------------------------
def test_multiply_divide_round_trip_extremes():
    rng = random.Random(1)
    hs = interesting_h()
    hs += [rng.randrange(-(2 ** 40), 2 ** 40) for _ in range(2000)]
    hs += [rng.randrange(I64_MIN, I64_MAX + 1) for _ in range(500)]
    m = len(hs)
    ns = [1, 2, 3, 511, 512, 513, 1023, 1024] + [rng.randint(1, 1024) for _ in range(m - 8)]
    words = [0, 1, WORD_LIMIT - 1, 2 ** 52, 1023, 1024] + [rng.randrange(0, WORD_LIMIT) for _ in range(m - 6)]
    # every (h, n, w) pairing of the special values, by rotating the lists against each other
    for shift in (0, 3, 11):
        h = t64(hs)
        n = t64(ns[shift:] + ns[:shift])
        w = t64(words[2 * shift:] + words[:2 * shift])
        h2, w2 = fixed.multiply(h, n, w)
        assert (w2 >= 0).all()
        h3, w3 = fixed.divide(h2, n, w2)
        assert torch.equal(h3, h) and torch.equal(w3, w)
        # and against the unbounded reference, element by element
        for hi, ni, wi, ho, wo in zip(h.tolist(), n.tolist(), w.tolist(), h2.tolist(), w2.tolist()):
            assert (ho, wo) == ref_multiply(hi, ni, wi)


def test_gate_one_is_identity():
    rng = random.Random(2)
    h = t64(interesting_h() + [rng.randrange(I64_MIN, I64_MAX + 1) for _ in range(500)])
    w = t64([rng.randrange(0, WORD_LIMIT) for _ in range(h.numel() - 3)] + [0, 1, WORD_LIMIT - 1])
    n = torch.full_like(h, D)
    h2, w2 = fixed.multiply(h, n, w)
    assert torch.equal(h2, h) and torch.equal(w2, w)
    h3, w3 = fixed.divide(h, n, w)
    assert torch.equal(h3, h) and torch.equal(w3, w)


int64s = st.one_of(st.integers(I64_MIN, I64_MAX), st.integers(-(2 ** 41), 2 ** 41),
                   st.sampled_from(interesting_h()))
gates = st.one_of(st.integers(1, D), st.sampled_from([1, 2, 512, 1023, 1024]))
words = st.one_of(st.integers(0, WORD_LIMIT - 1), st.sampled_from([0, 1, WORD_LIMIT - 1]))


@settings(max_examples=300, deadline=None)
@given(h=int64s, n=gates, w=words)
def test_round_trip_property(h, n, w):
    h2, w2 = fixed.multiply(t64([h]), t64([n]), t64([w]))
    assert (h2.item(), w2.item()) == ref_multiply(h, n, w)
    h3, w3 = fixed.divide(h2, t64([n]), w2)
    assert (h3.item(), w3.item()) == (h, w)


@settings(max_examples=300, deadline=None)
@given(h=st.one_of(st.integers(-(2 ** 52), 2 ** 52), st.sampled_from([0, -1, 1, 2 ** 40, -(2 ** 40)])),
       n=gates, w=words)
def test_divide_then_multiply_is_identity(h, n, w):
    """divide and multiply are mutual inverses on Z x N (divide never grows the word; it scales
    h by about 1024 / n, so h is kept where that fits in int64)."""
    h2, w2 = fixed.divide(t64([h]), t64([n]), t64([w]))
    assert (h2.item(), w2.item()) == ref_divide(h, n, w)
    assert 0 <= w2.item() <= w
    h3, w3 = fixed.multiply(h2, t64([n]), w2)
    assert (h3.item(), w3.item()) == (h, w)


@settings(max_examples=300, deadline=None)
@given(c=st.one_of(st.integers(I64_MIN, I64_MAX), st.integers(-5000, 5000)),
       n=st.one_of(st.integers(1, 2048), st.integers(1, I64_MAX)))
def test_floor_divmod_matches_python(c, n):
    q, r = fixed.floor_divmod(t64([c]), t64([n]))
    assert (q.item(), r.item()) == divmod(c, n)


def test_floor_divmod_vectorised():
    rng = random.Random(3)
    c = [rng.randrange(-(2 ** 45), 2 ** 45) for _ in range(3000)] + [I64_MIN, I64_MAX, -1, 0, 1]
    n = [rng.randint(1, 1024) for _ in range(len(c))]
    q, r = fixed.floor_divmod(t64(c), t64(n))
    assert list(zip(q.tolist(), r.tolist())) == [divmod(a, b) for a, b in zip(c, n)]


# ---------------------------------------------------------------------------------------------
# 2. growth bound (spec §6 test 2)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_growth_bound_one_step(k):
    gen = torch.Generator().manual_seed(k)
    m = 4000
    lo = 1 << (10 - k)
    n = torch.randint(lo, D + 1, (m,), generator=gen)
    n[:200] = lo                      # the worst gate
    h = torch.randint(-(2 ** 40), 2 ** 40, (m,), generator=gen)
    h[:100] = D - 1                   # the largest discarded digit
    h[100:200] = -1
    b = torch.randint(0, 54 - k, (m,), generator=gen)            # word < 2**b, b + k <= 53
    w = (torch.rand(m, generator=gen, dtype=torch.float64) * (2.0 ** b)).to(torch.int64)
    w = torch.minimum(w, (1 << b) - 1)
    w[:50] = (1 << b[:50]) - 1        # the largest word of each width
    _, w2 = fixed.multiply(h, n, w)
    assert (w2 >= 0).all()
    assert (w2 < (1 << (b + k))).all()


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_growth_bound_from_zero(k):
    gen = torch.Generator().manual_seed(10 + k)
    lo = 1 << (10 - k)
    e = 256
    h = torch.randint(-(2 ** 40), 2 ** 40, (e,), generator=gen)
    w = torch.zeros(e, dtype=torch.int64)
    for m in range(1, 53 // k + 1):
        n = torch.randint(lo, D + 1, (e,), generator=gen)
        n[: e // 4] = lo
        h, w = fixed.multiply(h, n, w)
        assert (w < (1 << (m * k))).all(), m


# ---------------------------------------------------------------------------------------------
# 3. information optimality with an unbounded buffer (spec §2.5, §6 test 3)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_information_optimality_unbounded(k):
    rng = random.Random(100 + k)
    lo = 1 << (10 - k)
    elements, steps = 5, 20_000
    devs = []
    for _ in range(elements):
        c, b, opt = rng.randrange(-(2 ** 31), 2 ** 31), 0, 0.0
        for _ in range(steps):
            n = rng.randint(lo, D)
            c, b = ref_multiply(c, n, b)
            c += rng.randint(-(2 ** 23), 2 ** 23)   # an RNN-like additive update keeps c busy
            opt += fixed.GATE_BITS - math.log2(n)
        assert opt > 1000                            # the test is not vacuous
        devs.append(b.bit_length() - opt)
    # per element: never more than a few bits above the optimum (no per-element lower bound:
    # the state's own digits can absorb information, spec §6 test 3)
    assert max(devs) <= 4, devs
    # in total: within a few bits per element on both sides
    assert -6 * elements <= sum(devs) <= 4 * elements, devs


@pytest.mark.parametrize("k", [1, 2, 3, 5, 10])
def test_torch_multiply_matches_unbounded_reference(k):
    """While the word stays below 2**53 the int64 multiply is the Python-int algorithm."""
    rng = random.Random(200 + k)
    gen = torch.Generator().manual_seed(200 + k)
    lo = 1 << (10 - k)
    e = 64
    h = torch.randint(-(2 ** 40), 2 ** 40, (e,), generator=gen)
    w = torch.zeros(e, dtype=torch.int64)
    ref = [(c, 0) for c in h.tolist()]
    checked = 0
    for _ in range(400):
        live = [b < WORD_LIMIT >> k for _, b in ref]   # the next multiply is within contract
        if not any(live):
            break
        n = [rng.randint(lo, D) if rng.random() < 0.7 else rng.randint(max(lo, 900), D) for _ in range(e)]
        u = [rng.randint(-(2 ** 23), 2 ** 23) for _ in range(e)]
        active = t64(live).bool()
        h2, w2 = fixed.multiply(h, t64(n), w)
        h = torch.where(active, h2 + t64(u), h)
        w = torch.where(active, w2, w)
        ref = [(c2 + ui, b2) if a else (c, b)
               for (c, b), ni, ui, a in zip(ref, n, u, live)
               for c2, b2 in [ref_multiply(c, ni, b)]]
        assert [c for c, _ in ref] == h.tolist()
        assert [b for _, b in ref] == w.tolist()
        checked += sum(live)
    assert checked >= e * (53 // k)
    assert max(b for _, b in ref) >= 2 ** 40                  # words got large before stopping


# ---------------------------------------------------------------------------------------------
# 4. InformationBuffer: chunks, masks, spills, accounting (spec §6 tests 5, 6, 12)
# ---------------------------------------------------------------------------------------------
def make_trace(seed: int, steps: int, shape: tuple[int, int], k: int, masks: bool, gate_low: int | None = None,
               gate_high: int = D):
    """Gates n in [gate_low or 2**(10-k), gate_high], updates u, row masks (steps, B, 1)."""
    gen = torch.Generator().manual_seed(seed)
    lo = gate_low if gate_low is not None else 1 << (10 - k)
    n = torch.randint(lo, gate_high + 1, (steps, *shape), generator=gen)
    u = torch.randint(-(2 ** 23), 2 ** 23 + 1, (steps, *shape), generator=gen)
    active = (torch.rand(steps, shape[0], 1, generator=gen) < 0.75) if masks else None
    h0 = torch.randint(-(2 ** 30), 2 ** 30, shape, generator=gen)
    return h0, n, u, active


def run_forward(buf, h0, n, u, active, chunks):
    hs, t = [h0], 0
    h = h0
    for size in chunks:
        buf.begin_chunk(size)
        for _ in range(size):
            a = None if active is None else active[t]
            h = buf.multiply(h, n[t], a)
            h = h + (u[t] if a is None else torch.where(a, u[t], 0))
            hs.append(h)
            t += 1
        buf.end_chunk()
    assert t == n.shape[0]
    return hs


def run_reverse(buf, h_last, n, u, active, chunks):
    """The reconstructed states, in forward order (h_0 first)."""
    hs, t = [h_last], n.shape[0]
    h = h_last
    for size in reversed(chunks):
        buf.begin_reverse_chunk(size)
        for _ in range(size):
            t -= 1
            a = None if active is None else active[t]
            h = h - (u[t] if a is None else torch.where(a, u[t], 0))
            h = buf.divide(h, n[t], a)
            hs.append(h)
        buf.end_reverse_chunk()
    assert t == 0
    return hs[::-1]


def simulate_policy(h0, n, u, active, k, chunks):
    """Our spill policy on Python ints: before an active multiply, spill if word >= 2**(53-k).

    Returns per-step states, final words, per-chunk spill counts per element, the spilled
    words (tagged with the op index in bits 53..62) per chunk, and the optimum in bits."""
    shape = tuple(h0.shape)
    ne = h0.numel()
    hs_flat = h0.reshape(-1).tolist()
    ns = n.reshape(n.shape[0], -1).tolist()
    us = u.reshape(u.shape[0], -1).tolist()
    act = None if active is None else active.expand(-1, *shape).reshape(n.shape[0], -1).tolist()
    words = [0] * ne
    states, counts, spilled, opt = [h0.clone()], [], [], 0.0
    t = 0
    for size in chunks:
        cnt, sp = [0] * ne, []
        for op in range(size):
            for e in range(ne):
                if act is not None and not act[t][e]:
                    continue
                if words[e] >= 1 << (53 - k):
                    cnt[e] += 1
                    sp.append(words[e] | (op << 53))
                    words[e] = 0
                assert words[e] < WORD_LIMIT
                hs_flat[e], words[e] = ref_multiply(hs_flat[e], ns[t][e], words[e])
                hs_flat[e] += us[t][e]
                opt += fixed.GATE_BITS - math.log2(ns[t][e])
            states.append(t64(hs_flat).view(shape))
            t += 1
        counts.append(t64(cnt).view(shape))
        spilled.append(sorted(sp))
    return states, t64(words).view(shape), counts, spilled, opt


def split(total: int, sizes) -> list[int]:
    out, left, i = [], total, 0
    while left:
        s = min(sizes[i % len(sizes)], left)
        out.append(s)
        left -= s
        i += 1
    return out


CASES = [
    # (k, steps, shape, masks, chunk sizes, gate_low, gate_high)
    (10, 120, (3, 4), False, [50], 1, 1),        # k = 10, n = 1: 10 bits per multiply, spill every ~5
    (10, 90, (4, 3), True, [7, 30, 1], 1, 8),
    (3, 600, (3, 5), True, [128, 300, 1, 64], None, D),
    (1, 400, (2, 3), False, [400], None, D),
    (5, 300, (4, 2), True, [33], None, 200),
    (2, 1024, (2, 2), True, [1024], None, 300),  # a full 1024-op chunk, worst-ish gates
]


@pytest.mark.parametrize("k, steps, shape, masks, sizes, lo, hi", CASES)
def test_buffer_round_trip_spills_accounting(k, steps, shape, masks, sizes, lo, hi):
    h0, n, u, active = make_trace(1000 + steps + k, steps, shape, k, masks, lo, hi)
    chunks = split(steps, sizes)
    buf = InformationBuffer(shape, k)
    hs = run_forward(buf, h0, n, u, active, chunks)

    # the forward is the Python-int algorithm under the documented policy, bit for bit
    states, words, counts, spilled, opt = simulate_policy(h0, n, u, active, k, chunks)
    for t, (got, want) in enumerate(zip(hs, states)):
        assert torch.equal(got, want), f"forward state {t} differs from the policy simulation"
    assert torch.equal(buf.word, words)
    assert len(buf.counts) == len(buf.segments) == len(chunks)
    for c_got, c_want, seg, sp in zip(buf.counts, counts, buf.segments, spilled):
        assert torch.equal(c_got.long(), c_want)                      # spills per element per chunk
        assert seg.numel() == int(c_want.sum())
        assert sorted(seg.tolist()) == sp                            # the spilled words and their tags
    total_spills = sum(s.numel() for s in buf.segments)
    assert total_spills > 0, "the case was meant to force spills"
    assert total_spills == sum(int(c.sum()) for c in counts)

    # accounting: 64 bits per current and spilled word, 8 per count
    e = h0.numel()
    assert buf.used_bits == 64 * (e + total_spills) + 8 * e * len(chunks)
    assert buf.optimal_bits == pytest.approx(opt, rel=1e-12, abs=1e-9)
    assert buf.optimal_bits > 0

    if active is not None:                                           # the masks do mask something
        assert (~active).any() and active.any()
    # reverse: every intermediate state, bit for bit, and the buffer back to empty
    rec = run_reverse(buf, hs[-1], n, u, active, chunks)
    for t, (got, want) in enumerate(zip(rec, hs)):
        assert torch.equal(got, want), f"reconstructed state {t} differs"
    buf.check_empty()
    assert not buf.segments and not buf.counts
    assert not buf.word.any()


def test_masked_rows_bit_identical_both_directions():
    k, shape = 4, (6, 5)
    h0, n, u, _ = make_trace(7, 200, shape, k, False)
    gen = torch.Generator().manual_seed(8)
    active = torch.rand(200, shape[0], 1, generator=gen) < 0.5
    buf = InformationBuffer(shape, k)
    buf.begin_chunk(200)
    h, trail = h0, []
    for t in range(200):
        w_before, h_before = buf.word.clone(), h
        h = buf.multiply(h, n[t], active[t])
        off = ~active[t].expand(shape)
        assert torch.equal(h[off], h_before[off])
        assert torch.equal(buf.word[off], w_before[off])
        trail.append((h_before, w_before))
    buf.end_chunk()
    buf.begin_reverse_chunk(200)
    for t in reversed(range(200)):
        w_before, h_before = buf.word.clone(), h
        h = buf.divide(h, n[t], active[t])
        off = ~active[t].expand(shape)
        assert torch.equal(h[off], h_before[off])
        assert torch.equal(buf.word[off], w_before[off])
        assert torch.equal(h, trail[t][0])
        assert torch.equal(buf.word, trail[t][1])
    buf.end_reverse_chunk()
    buf.check_empty()


def test_all_rows_masked_is_a_no_op():
    shape = (3, 4)
    h0, n, u, _ = make_trace(9, 20, shape, 3, False)
    active = torch.zeros(20, shape[0], 1, dtype=torch.bool)
    buf = InformationBuffer(shape, 3)
    hs = run_forward(buf, h0, n, u, active, [20])
    assert all(torch.equal(h, h0) for h in hs)
    assert buf.optimal_bits == 0 and not buf.word.any() and buf.segments[0].numel() == 0
    run_reverse(buf, hs[-1], n, u, active, [20])
    buf.check_empty()


@pytest.mark.parametrize("k, masks", [(10, False), (3, True), (1, True)])
def test_forward_independent_of_chunk_boundaries(k, masks):
    """Spills depend on word values only, so how the multiplies are cut into chunks cannot
    change the forward trajectory, the final words, or the number of words spilled."""
    steps, shape = 500, (3, 4)
    h0, n, u, active = make_trace(300 + k, steps, shape, k, masks, 1 if k == 10 else None)
    results = []
    for sizes in ([500], [1] * 20 + [480], [7, 64, 3], [250, 250], [13]):
        chunks = split(steps, sizes)
        buf = InformationBuffer(shape, k)
        hs = run_forward(buf, h0, n, u, active, chunks)
        per_elem = sum(c.long() for c in buf.counts)
        results.append((torch.stack(hs), buf.word.clone(), per_elem, buf.optimal_bits))
        rec = run_reverse(buf, hs[-1], n, u, active, chunks)
        assert torch.equal(torch.stack(rec), torch.stack(hs))
        buf.check_empty()
    first = results[0]
    assert first[2].sum() > 0
    for other in results[1:]:
        assert torch.equal(other[0], first[0])
        assert torch.equal(other[1], first[1])
        assert torch.equal(other[2], first[2])
        assert other[3] == pytest.approx(first[3], rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(k=st.integers(1, 10), steps=st.integers(1, 260), seed=st.integers(0, 2 ** 31),
       sizes=st.lists(st.integers(1, 120), min_size=1, max_size=4), masks=st.booleans(),
       harsh=st.booleans())
def test_buffer_round_trip_property(k, steps, seed, sizes, masks, harsh):
    shape = (2, 3)
    lo = 1 << (10 - k)
    h0, n, u, active = make_trace(seed, steps, shape, k, masks, lo, lo if harsh else D)
    chunks = split(steps, sizes)
    buf = InformationBuffer(shape, k)
    hs = run_forward(buf, h0, n, u, active, chunks)
    states, words, counts, _, opt = simulate_policy(h0, n, u, active, k, chunks)
    assert torch.equal(torch.stack(hs), torch.stack(states))
    assert torch.equal(sum(c.long() for c in buf.counts), sum(counts))
    total = sum(s.numel() for s in buf.segments)
    assert buf.used_bits == 64 * (h0.numel() + total) + 8 * h0.numel() * len(chunks)
    assert buf.optimal_bits == pytest.approx(opt, rel=1e-12, abs=1e-9)
    rec = run_reverse(buf, hs[-1], n, u, active, chunks)
    assert torch.equal(torch.stack(rec), torch.stack(hs))
    buf.check_empty()


def test_gate_one_buffer_costs_nothing():
    shape = (2, 3)
    h0, _, u, _ = make_trace(11, 100, shape, 3, False)
    n = torch.full((100, *shape), D)
    buf = InformationBuffer(shape, 3)
    hs = run_forward(buf, h0, n, u, None, [100])
    assert buf.optimal_bits == 0 and not buf.word.any() and buf.segments[0].numel() == 0
    # with n = 1024 the multiply is the identity, so h_t = h_0 + u_1 + ... + u_t
    assert torch.equal(hs[-1], h0 + u.sum(0))
    run_reverse(buf, hs[-1], n, u, None, [100])
    buf.check_empty()


# ---------------------------------------------------------------------------------------------
# 5. negative tests
# ---------------------------------------------------------------------------------------------
def _corrupted_reverse_detected(k, step_from_end, delta, seed):
    steps, shape = 150, (2, 3)
    h0, n, u, active = make_trace(seed, steps, shape, k, True)
    chunks = split(steps, [60])
    buf = InformationBuffer(shape, k)
    hs = run_forward(buf, h0, n, u, active, chunks)
    bad = n.clone()
    t = steps - 1 - step_from_end
    lo = 1 << (10 - k)
    bad[t] = torch.where(bad[t] + delta > D, bad[t] - delta, bad[t] + delta).clamp(lo, D)
    assert not torch.equal(bad[t], n[t])
    rec = run_reverse(buf, hs[-1], bad, u, active, chunks)
    try:
        buf.check_empty()
    except RuntimeError:
        return True
    return not torch.equal(rec[0], h0)


@pytest.mark.parametrize("k, step_from_end, delta, seed", [(3, 0, 1, 1), (3, 75, 5, 2), (10, 149, 1, 3),
                                                           (1, 10, 1, 4), (5, 100, 30, 5)])
def test_corrupted_reverse_is_detected(k, step_from_end, delta, seed):
    assert _corrupted_reverse_detected(k, step_from_end, delta, seed)


def test_corrupted_reverse_raises_when_h_diverges():
    """A wrong gate usually leaves garbage in the word: check_empty must raise."""
    steps, shape = 100, (3, 4)
    h0, n, u, _ = make_trace(21, steps, shape, 3, False)
    buf = InformationBuffer(shape, 3)
    hs = run_forward(buf, h0, n, u, None, [100])
    bad = n.clone()
    bad[40] = torch.where(bad[40] == D, D - 1, bad[40] + 1)
    rec = run_reverse(buf, hs[-1], bad, u, None, [100])
    assert not torch.equal(rec[0], h0)
    with pytest.raises(RuntimeError):
        buf.check_empty()


def test_reverse_with_wrong_chunk_length_is_detected():
    steps, shape = 120, (2, 3)
    h0, n, u, _ = make_trace(31, steps, shape, 10, False, 1, 4)
    buf = InformationBuffer(shape, 10)
    hs = run_forward(buf, h0, n, u, None, [120])
    assert buf.segments[0].numel() > 0
    # undo the same 120 multiplies, but announce a 121-op chunk: the tags no longer line up
    buf.begin_reverse_chunk(121)
    h = hs[-1]
    for t in reversed(range(steps)):
        h = buf.divide(h - u[t], n[t])
    buf.end_reverse_chunk()
    with pytest.raises(RuntimeError):
        buf.check_empty()


@pytest.mark.parametrize("k", [0, 11, -1, 2.0, "3", None])
def test_bad_forget_bits(k):
    with pytest.raises(ValueError):
        InformationBuffer((2, 3), k)


@pytest.mark.parametrize("ops", [0, -1, MAX_CHUNK_OPS + 1, 5000])
def test_bad_chunk_length(ops):
    buf = InformationBuffer((2, 3), 3)
    with pytest.raises(ValueError):
        buf.begin_chunk(ops)
    buf.begin_chunk(3)
    h = torch.ones(2, 3, dtype=torch.int64)
    for _ in range(3):
        h = buf.multiply(h, torch.full((2, 3), 700))
    buf.end_chunk()
    with pytest.raises(ValueError):
        buf.begin_reverse_chunk(ops)


def test_chunk_limits_accepted():
    assert MAX_CHUNK_OPS == 1024
    buf = InformationBuffer((1, 2), 10)
    buf.begin_chunk(1)
    buf.begin_chunk(MAX_CHUNK_OPS)
    assert buf.scratch_words(MAX_CHUNK_OPS) * (53 // 10) >= MAX_CHUNK_OPS


def test_second_reverse_raises():
    shape = (2, 2)
    h0, n, u, _ = make_trace(41, 30, shape, 3, False)
    buf = InformationBuffer(shape, 3)
    hs = run_forward(buf, h0, n, u, None, [30])
    rec = run_reverse(buf, hs[-1], n, u, None, [30])
    assert torch.equal(rec[0], h0)
    buf.check_empty()
    with pytest.raises(RuntimeError):
        buf.begin_reverse_chunk(30)


def test_check_empty_raises_before_reverse():
    shape = (2, 2)
    h0, n, u, _ = make_trace(42, 30, shape, 3, False)
    buf = InformationBuffer(shape, 3)
    buf.check_empty()                        # a fresh buffer is empty
    run_forward(buf, h0, n, u, None, [30])
    with pytest.raises(RuntimeError):
        buf.check_empty()


# ---------------------------------------------------------------------------------------------
# 6. Maclaurin parity (spec §6 test 15)
# ---------------------------------------------------------------------------------------------
def test_vector_of_ratios_exact():
    ratios = torch.tensor([0.95, 0.9, 0.5, 0.3, 1.0, 0.999, 2 ** -10], dtype=torch.float64)
    x = torch.tensor([3.14159, -2.71828, 1e-7, -1e-7, 255.5, -256.0, 0.0], dtype=torch.float64)
    h = fixed.to_fixed(x)
    n = fixed.quantise_gate(ratios, 10)
    assert n.tolist() == [round(r * 1024) for r in ratios.tolist()]
    for w0 in (torch.zeros_like(h), torch.arange(7, dtype=torch.int64) * 12345):
        h2, w2 = fixed.multiply(h, n, w0)
        # the value scaled by n / 1024, up to the one digit moved out of the buffer
        assert (h2 - (h * n).div(D, rounding_mode="floor")).abs().lt(2 * n).all()
        h3, w3 = fixed.divide(h2, n, w2)
        assert torch.equal(h3, h) and torch.equal(w3, w0)
    # every ratio applied in turn to the whole vector, then undone in reverse order
    h_cur, w = h.clone(), torch.zeros_like(h)
    for r in n.tolist():
        h_cur, w = fixed.multiply(h_cur, torch.full_like(h, r), w)
    for r in reversed(n.tolist()):
        h_cur, w = fixed.divide(h_cur, torch.full_like(h, r), w)
    assert torch.equal(h_cur, h) and not w.any()


def test_200_multiplies_then_200_divides():
    rng = random.Random(5)
    shape = (4, 8)
    h0 = fixed.to_fixed(torch.randn(shape, dtype=torch.float64) * 10)
    gates = [fixed.quantise_gate(torch.rand(shape, dtype=torch.float64) * 0.9 + 0.1, 4) for _ in range(200)]
    buf = InformationBuffer(shape, 4)
    buf.begin_chunk(200)
    h = h0
    for g in gates:
        h = buf.multiply(h, g)
    buf.end_chunk()
    assert buf.segments[0].numel() > 0
    buf.begin_reverse_chunk(200)
    for g in reversed(gates):
        h = buf.divide(h, g)
    buf.end_reverse_chunk()
    assert torch.equal(h, h0)
    buf.check_empty()
    # the same on raw words with the unbounded reference (no spills needed)
    c0 = [rng.randrange(-(2 ** 40), 2 ** 40) for _ in range(3)]
    for c in c0:
        ns = [rng.randint(1, D) for _ in range(200)]
        x, b = c, 0
        for v in ns:
            x, b = ref_multiply(x, v, b)
        for v in reversed(ns):
            x, b = ref_divide(x, v, b)
        assert (x, b) == (c, 0)


def test_mixed_multiply_divide_sequence_round_trips():
    """Maclaurin's 200-op mixed push/pop test: divide is a bijection too, so any mixed sequence
    of multiplies and divides is undone by the mirrored sequence."""
    gen = torch.Generator().manual_seed(6)
    rng = random.Random(6)
    e = 16
    h0 = torch.randint(-(2 ** 40), 2 ** 40, (e,), generator=gen)
    w0 = torch.randint(0, 2 ** 20, (e,), generator=gen)
    ops = [(rng.random() < 0.5, torch.randint(900, D + 1, (e,), generator=gen)) for _ in range(200)]
    h, w = h0, w0
    for is_mul, n in ops:
        h, w = (fixed.multiply if is_mul else fixed.divide)(h, n, w)
        assert (w >= 0).all() and (w < WORD_LIMIT).all()
    for is_mul, n in reversed(ops):
        h, w = (fixed.divide if is_mul else fixed.multiply)(h, n, w)
    assert torch.equal(h, h0) and torch.equal(w, w0)


def test_gate_one_on_empty_word_leaves_it_empty():
    h = fixed.to_fixed(torch.tensor([0.0, 1.5, -1.5, 200.0], dtype=torch.float64))
    zero = torch.zeros_like(h)
    one = torch.full_like(h, D)
    h2, w2 = fixed.multiply(h, one, zero)
    assert torch.equal(h2, h) and not w2.any()
    h3, w3 = fixed.divide(h, one, zero)
    assert torch.equal(h3, h) and not w3.any()
    buf = InformationBuffer(tuple(h.shape), 1)
    buf.begin_chunk(1)
    assert torch.equal(buf.multiply(h, one), h)
    buf.end_chunk()
    assert not buf.word.any() and buf.optimal_bits == 0
    buf.begin_reverse_chunk(1)
    assert torch.equal(buf.divide(h, one), h)
    buf.end_reverse_chunk()
    buf.check_empty()


# ---------------------------------------------------------------------------------------------
# 7. fixed-point conversions and gate quantisation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_to_fixed_rejects_non_finite(bad):
    with pytest.raises(ValueError):
        fixed.to_fixed(torch.tensor([0.0, bad, 1.0]))


@pytest.mark.parametrize("big", [2.0 ** 32, -(2.0 ** 32), 1e20, -(2.0 ** 33)])
def test_to_fixed_rejects_out_of_range(big):
    with pytest.raises(OverflowError):
        fixed.to_fixed(torch.tensor([0.5, big], dtype=torch.float64))


def test_to_fixed_accepts_just_below_limit():
    x = torch.tensor([2.0 ** 32 - 2 ** -20, -(2.0 ** 32) + 2 ** -20], dtype=torch.float64)
    h = fixed.to_fixed(x)
    assert h.dtype == torch.int64
    assert torch.equal(fixed.to_float(h, torch.float64), x)
    assert fixed.to_fixed(torch.zeros(0)).numel() == 0


@settings(max_examples=300, deadline=None)
@given(x=st.one_of(st.floats(-(2.0 ** 32), 2.0 ** 32, allow_nan=False, exclude_max=True, exclude_min=True),
                   st.floats(-4.0, 4.0), st.floats(-1e-6, 1e-6)))
def test_to_fixed_round_trip_property(x):
    t = torch.tensor([x], dtype=torch.float64)
    h = fixed.to_fixed(t)
    assert h.dtype == torch.int64
    back = fixed.to_float(h, torch.float64).item()
    assert abs(back - x) <= 2.0 ** -24
    # a fixed-point value is a fixed point of the conversion
    assert torch.equal(fixed.to_fixed(fixed.to_float(h, torch.float64)), h)


def test_to_fixed_round_trip_float32_inputs():
    x = torch.randn(10_000) * 100
    h = fixed.to_fixed(x)
    assert (fixed.to_float(h, torch.float64) - x.double()).abs().max().item() <= 2.0 ** -24


@pytest.mark.parametrize("k", list(range(1, 11)))
def test_quantise_gate_clamps(k):
    z = torch.cat([torch.rand(5000, dtype=torch.float64) * 3 - 1,
                   torch.tensor([-1.0, 0.0, 2.0 ** -k, 2.0 ** -k * 0.999, 2.0 ** -11, 1.0, 1.0001, 5.0],
                                dtype=torch.float64)])
    n = fixed.quantise_gate(z, k)
    lo = 1 << (10 - k)
    assert n.dtype == torch.int64
    assert n.min().item() >= lo and n.max().item() <= D
    inside = (z >= 2.0 ** -k) & (z <= 1)
    assert torch.equal(n[inside], torch.round(z[inside] * D).long())
    assert (n[z < 2.0 ** -k] == lo).all()
    assert (n[z > 1] == D).all()
    # float32 gates too, whatever the rounding
    n32 = fixed.quantise_gate(z.float(), k)
    assert n32.min().item() >= lo and n32.max().item() <= D
