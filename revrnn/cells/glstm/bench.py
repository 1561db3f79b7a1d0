"""The g-LSTM's benchmark group, ``sparse``, of ``bench/triton_cells.py`` (:func:`sparse`) and of
``bench/cpu_cells.py`` (:func:`sparse_cpu`).

``sparse``: a g-LSTM whose ``sigma_fraction`` is set so that about 10 % of the unit-steps are
open, the sparse open-unit path (baseline) against the dense one; the rows give the measured
open fraction and the work the sparse path skipped. Target: dense ≥ 4.
"""
from __future__ import annotations

from typing import Any

import torch

OPEN_FRACTION = 0.1


def sigma_fraction_for(input_size: int, hidden_size: int, T: int, goal: float) -> tuple[float, float]:
    """The ``sigma_fraction`` (bisected on a log scale) whose g-LSTM, built from seed 0 as the
    rows build it, has open fraction closest to ``goal``, and that fraction."""
    from ...nn import GLSTM

    def fraction(s: float) -> float:
        torch.manual_seed(0)
        m = GLSTM(input_size, hidden_size, t_max=T, sigma_fraction=s)
        return m.cells[0].open_fraction(m.cell_params(0), T)

    lo, hi = 1e-5, 1.0  # open fraction grows with σ
    for _ in range(30):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if fraction(mid) < goal else (lo, mid)
    return min(((s, fraction(s)) for s in (lo, hi)), key=lambda sf: abs(sf[1] - goal))


def sparse(b: Any) -> None:
    """The ``sparse`` group on ``b``, the script's ``Bench``."""
    from ...nn import GLSTM

    a = b.args
    s, open_fraction = sigma_fraction_for(a.input, a.hidden, a.T, OPEN_FRACTION)
    case = f"GLSTM {open_fraction:.1%} open B={a.batch} H={a.hidden}"
    make = lambda: GLSTM(a.input, a.hidden, t_max=a.T, sigma_fraction=s, backend="triton")  # noqa: E731
    kw = dict(T=a.T, B=a.batch, I=a.input, H=a.hidden, sigma_fraction=s, open_fraction=open_fraction)
    b.triton.sparse_work = type(b.triton.sparse_work)()
    rows = [b.row("sparse", case, "triton sparse", make, settings=((b.triton, "glstm_sparse", "always"),), **kw)]
    rows[0]["skipped_fraction"] = b.triton.sparse_work.skipped_fraction
    rows.append(b.row("sparse", case, "triton dense", make, settings=((b.triton, "glstm_sparse", "never"),),
                      target=(">=", 4.0), **kw))
    b.compare(rows)


def sparse_cpu(time_candidates: Any, quick: bool) -> list[dict[str, Any]]:
    """The ``sparse`` group on the compiled executor (training steps, T=200 B=32 I=H=256), with
    the input projection's GEMMs alone beside them (dense on both paths);
    ``time_candidates(label, (T, B, I, H), candidates, targets)`` is the script's timer."""
    from ...backends import get_backend
    from ...nn import GLSTM

    T, B, I, H = (20, 3, 5, 8) if quick else (200, 32, 256, 256)
    s, open_fraction = sigma_fraction_for(I, H, T, OPEN_FRACTION)
    torch.manual_seed(0)
    m = GLSTM(I, H, t_max=T, sigma_fraction=s, backend="cpu")
    x = torch.randn(T, B, I, requires_grad=True)
    backend = get_backend("cpu", x.device)

    def step(mode: str):
        def run() -> None:
            before, backend.glstm_sparse = backend.glstm_sparse, mode
            try:
                out, (h, c) = m(x)
                (out.sum() + h.sum() + c.sum()).backward()
            finally:
                backend.glstm_sparse = before
        return run

    # what neither path skips: the input projection and its two gradient GEMMs, dense in torch
    xs, w, g = x.detach().reshape(T * B, I), m.weight_ih_l0.detach(), torch.randn(T * B, 4 * H)

    def projection() -> None:
        torch.mm(xs, w.t())
        torch.mm(g.t(), xs)
        torch.mm(g, w)

    backend.sparse_work = type(backend.sparse_work)()
    label = f"GLSTM {open_fraction:.1%} open"
    rows = time_candidates(label, (T, B, I, H), {"cpu sparse": step("always"), "cpu dense": step("never"),
                                                 "projection GEMMs": projection}, {"cpu dense": (">=", 4.0)})
    rows[0]["skipped_fraction"] = backend.sparse_work.skipped_fraction
    return rows
