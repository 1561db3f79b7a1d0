"""The comparison that every backend test relies on (tests/utils.py) can fail where it must."""
from __future__ import annotations

import pytest
import torch

from utils import assert_close_all, floor_for, rel_err


def test_a_small_block_cannot_hide_behind_large_ones():
    """A bias gradient whose forget-gate block is 1000× smaller than the rest and 1 % wrong:
    one error per tensor sees 1e-5, the per-entry measure sees the 1 %."""
    want = torch.cat((torch.ones(8), torch.full((8,), 1e-3))).double()
    got = want.clone()
    got[8:] *= 1.01
    assert rel_err(got, want) < 2e-5  # per tensor: hidden
    assert abs(rel_err(got, want, floor=1e-4) - 1e-2) < 1e-9
    with pytest.raises(AssertionError, match="bias.grad"):
        assert_close_all({"bias.grad": got}, {"bias.grad": want}, 1e-6)


def test_the_floor_follows_the_dtype_and_the_tolerance():
    """Entries are measured against themselves down to where rounding alone could exceed the
    tolerance: far down in float64 at 1e-12, not at all (per tensor) in float16 at 1e-2."""
    assert floor_for(torch.float64, 1e-12) < 1e-2
    assert floor_for(torch.float16, 1e-2) == 1.0
    # an entry at the floor with a rounding-sized error passes; at its own scale it would not
    want = torch.tensor([1.0, 1e-6], dtype=torch.float64)
    got = want + torch.tensor([0.0, 16 * torch.finfo(torch.float64).eps])
    assert_close_all({"t": got}, {"t": want}, 1e-12)
    assert rel_err(got, want, floor=0.0) > 1e-12
