"""revrnn.heap.release hands the heap's free pages back: the resident set drops after it."""
from __future__ import annotations

import ctypes

import pytest

from revrnn import heap


def resident() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


@pytest.mark.skipif(heap._trim() is None, reason="the C library has no malloc_trim (not glibc)")
def test_release_returns_free_heap_pages():
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, n = 64 * 1024, 1024  # below glibc's mmap threshold: served from the heap
    # every other block stays: the freed ones are holes the heap cannot give back by shrinking,
    # as a long run's temporaries between longer-lived tensors
    blocks = [libc.malloc(size) for _ in range(2 * n)]
    for b in blocks:
        ctypes.memset(b, 1, size)
    for b in blocks[1::2]:
        libc.free(b)
    before = resident()
    heap.release()
    after = resident()
    for b in blocks[::2]:
        libc.free(b)
    assert before - after > n * size // 2, (before, after)
