"""Save and load across backends: a module's state_dict holds its parameters and buffers under
torch.nn's names whatever backend runs it, so a checkpoint written under one backend loads into
the same module under every other and computes the same function (every catalog case; the
backends that run here: the reference, the compiled executor, Triton under its interpreter)."""
from __future__ import annotations

import io

import pytest
import torch

import revrnn
from revrnn.backends import get_backend
from revrnn.cells import cases

HERE = [name for name, why in revrnn.available_backends("cpu").items() if why is None]
#: float64 throughout; the compiled paths' libm against torch's, over a few steps
RTOL = 1e-9


def runs(case, backend: str) -> bool:
    cell = case.make(3, 8, dtype=torch.float64).cells[0]
    return get_backend(backend, torch.device("cpu")).supports(cell, torch.float64)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for _, c in cases(conformance=True)])
def test_a_checkpoint_loads_and_runs_under_every_backend(case):
    torch.manual_seed(0)
    backends = [b for b in HERE if runs(case, b)]
    assert "reference" in backends
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    for writer in backends:
        saved = case.make(3, 8, dtype=torch.float64, backend=writer).eval()
        with torch.no_grad():
            want = saved(x)[0]
        blob = io.BytesIO()
        torch.save(saved.state_dict(), blob)
        for reader in backends:
            blob.seek(0)
            loaded = case.make(3, 8, dtype=torch.float64, backend=reader).eval()
            loaded.load_state_dict(torch.load(blob))
            assert loaded.state_dict().keys() == saved.state_dict().keys()
            with torch.no_grad():
                torch.testing.assert_close(loaded(x)[0], want, rtol=RTOL, atol=RTOL,
                                           msg=lambda m: f"written under {writer}, run under {reader}: {m}")
