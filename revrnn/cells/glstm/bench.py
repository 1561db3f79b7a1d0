"""The g-LSTM's benchmark group, ``sparse``, of ``revrnn bench sequence``
(:func:`sparse_comparisons`): a g-LSTM whose ``sigma_fraction`` is set so that about 10 % of the
unit-steps are open, training steps on each compiled backend with a sparse path (CPU: ``cpu``;
GPU: ``triton``, ``cuda``), the sparse open-unit path (the baseline) against the dense one, with
the dense input projection's GEMMs alone beside them (the dense path's share that no loop avoids;
the executor's sparse path computes the open unit-steps' share inside its loop, Triton's per
block of steps).
The rows give the measured open fraction and the work the sparse path skipped. Target (full
run): dense ≥ 4× sparse.
"""
from __future__ import annotations

from typing import Any, Callable

import torch

OPEN_FRACTION = 0.1
#: (T, B, I, H) per run size on CPU; on a GPU every size but quick runs GPU
SHAPES = {"quick": (20, 3, 5, 8), "default": (200, 32, 256, 256), "full": (200, 32, 256, 256)}
GPU = (1000, 64, 512, 512)


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


def sparse_comparisons(device: torch.device, size: str) -> list[Any]:
    """The ``sparse`` group on ``device`` at ``size`` (one comparison per compiled backend)."""
    from ...backends import available_backends, get_backend
    from ...benchmark.suite import Comparison
    from ...benchmark.timing import Candidate

    T, B, I, H = GPU if device.type == "cuda" and size != "quick" else SHAPES[size]
    rounds = {"quick": (1, 2), "default": (2, 5), "full": (2, 7)}[size]
    names = [n for n, why in available_backends(device).items()
             if why is None and hasattr(get_backend(n, device), "glstm_sparse")]

    def build(name: str) -> Callable[[], list[Candidate]]:
        def make() -> list[Candidate]:
            from ...nn import GLSTM

            s, open_fraction = sigma_fraction_for(I, H, T, OPEN_FRACTION)
            torch.manual_seed(0)
            m = GLSTM(I, H, t_max=T, sigma_fraction=s, backend=name).to(device)
            x = torch.randn(T, B, I, device=device, requires_grad=True)
            backend = get_backend(name, device)
            extra = {"open_fraction": open_fraction, "sigma_fraction": s}

            def step(mode: str, note: dict[str, Any]) -> Callable[[int], None]:
                def run(i: int) -> None:
                    before, backend.glstm_sparse = backend.glstm_sparse, mode
                    backend.sparse_work = type(backend.sparse_work)()
                    try:
                        out, (h, c) = m(x)
                        (out.sum() + h.sum() + c.sum()).backward()
                    finally:
                        backend.glstm_sparse = before
                    note["skipped_fraction"] = backend.sparse_work.skipped_fraction
                return run

            xs, w = x.detach().reshape(T * B, I), m.weight_ih_l0.detach()
            g = torch.randn(T * B, 4 * H, device=device)

            def projection(i: int) -> None:
                torch.mm(xs, w.t())
                torch.mm(g.t(), xs)
                torch.mm(g, w)

            sparse, dense = dict(extra), dict(extra)
            return [Candidate(f"{name} sparse", step("always", sparse), T, extra=sparse),
                    Candidate(f"{name} dense", step("never", dense), T,
                              (">=", 4.0) if size == "full" else None, extra=dense),
                    Candidate("projection GEMMs", projection, T)]
        return make

    return [Comparison(dict(suite="sequence", case=f"GLSTM ~{OPEN_FRACTION:.0%} open, {name} T={T} B={B} I={I} H={H}", T=T,
                            B=B, I=I, H=H, dtype="float32"), build(name), *rounds) for name in names]
