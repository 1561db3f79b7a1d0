"""The persistent whole-chunk Triton kernels (revrnn.kernels.persistent) against the reference
equations (revrnn.cells' LSTM/GRU step with reference.masked_step), differentiated by autograd
in float64.

Tolerances, as max |error| / max |reference| per tensor (tests/utils.rel_err):

* float32: the kernels compute in float32 with IEEE dots (no TF32), so each step carries a few
  roundings of 2^-24 ≈ 6e-8, summed over H ≤ 128 terms and compounded over ≤ 37 steps forward
  and back; we see ≲ 2e-6 (the weight gradient, a sum over K·B steps, the largest), so 1e-5
  is tight while any real error (a wrong gate, a missed mask row, an unwritten NaN-poisoned
  element) is O(1).
* bfloat16 / float16: inputs and weights are rounded to the dtype first and the reference runs
  on the same rounded values, so what remains is the kernel's own rounding: h cast to the dtype
  for each step's dot, and y, the stored activations and the gate gradients rounded on store,
  each a relative 2^-9 (bf16) or 2^-11 (fp16), a few of them per step, compounded over the
  steps. We see up to ~2e-2 (bf16: ~8 units of 2^-9) and ~1e-3 (fp16); the bounds leave a
  factor ~3 of margin.
"""
from __future__ import annotations

import functools

import pytest
import torch
from torch import Tensor

triton = pytest.importorskip("triton")

from revrnn.backends.reference import masked_step  # noqa: E402
from revrnn.cells.base import CellSpec  # noqa: E402
from revrnn.cells.gru import GRUCell  # noqa: E402
from revrnn.cells.lstm import LSTMCell  # noqa: E402
from revrnn.kernels import persistent  # noqa: E402
from utils import rel_err  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: 1e-5, torch.bfloat16: 5e-2, torch.float16: 3e-3}
LOW = (torch.bfloat16, torch.float16)
# (K, B, H): odd sizes; B = 19 spans two batch tiles; H = 128 the largest supported.
SIZES = [(1, 3, 5), (7, 19, 45), (37, 3, 128), (37, 19, 5), (7, 19, 128)]


def make_mask(K: int, B: int) -> Tensor:
    """Sequences of lengths 0..K (the longest and shortest always present): rows finish at
    every point of the chunk, including before it starts."""
    lengths = torch.randint(0, K + 1, (B,))
    lengths[0], lengths[-1] = K, 0
    if B > 2:
        lengths[1] = max(K // 2, 1)  # finishes mid-chunk
    return (torch.arange(K)[:, None] < lengths[None, :]).to(DEVICE)


def reference(cell: CellSpec, p: dict[str, Tensor], xp: Tensor, state: tuple[Tensor, ...],
              mask: Tensor | None) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Outputs (K, B, H) and end state of the masked steps, under autograd."""
    outs = []
    for t in range(xp.shape[0]):
        out, state = masked_step(cell, p, {}, xp[t], state, t, None if mask is None else mask[t])
        outs.append(out)
    return torch.stack(outs), state


def inputs(K: int, B: int, H: int, gates: int, dtype: torch.dtype, bias: bool):
    """Projected inputs, weights (torch.nn's init scale), states and output gradients, rounded
    to ``dtype`` where the kernels read them in ``dtype``."""
    w = ((torch.rand(gates * H, H, device=DEVICE) * 2 - 1) / H ** 0.5).to(dtype)
    b = ((torch.rand(gates * H, device=DEVICE) * 2 - 1) / H ** 0.5).to(dtype) if bias else None
    xp = torch.randn(K, B, gates * H, device=DEVICE).to(dtype)
    h0, c0 = torch.randn(B, H, device=DEVICE), torch.randn(B, H, device=DEVICE)
    gy = torch.randn(K, B, H, device=DEVICE).to(dtype)
    gh, gc = torch.randn(B, H, device=DEVICE), torch.randn(B, H, device=DEVICE)
    return xp, w, b, h0, c0, gy, gh, gc


def grads_of(y: Tensor, end: tuple[Tensor, ...], leaves: list[Tensor], gy: Tensor,
             grad_end: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """Gradients wrt ``leaves`` of the loss whose gradients wrt y and end are gy, grad_end."""
    loss = (y * gy.double()).sum() + sum((e * g.double()).sum() for e, g in zip(end, grad_end))
    return torch.autograd.grad(loss, leaves)


def check(got: dict[str, Tensor], want: dict[str, Tensor], tol: float) -> None:
    for key, w in want.items():
        g = got[key]
        assert g.shape == w.shape, key
        err = rel_err(g.double(), w.double())
        assert err <= tol, f"{key}: relative error {err:.3g} > {tol:.1g}"


def run_lstm(K: int, B: int, H: int, dtype: torch.dtype, masked: bool, tol: float) -> None:
    """One chunk forward and backward through the kernels against the float64 reference."""
    xp, w, _, h0, c0, gy, gh, gc = inputs(K, B, H, 4, dtype, bias=False)
    mask = make_mask(K, B) if masked else None
    y, h, c, res = persistent.lstm_forward(xp, w, h0, c0, mask, keep=True)
    dxp, dh0, dc0, dw = persistent.lstm_backward(res, w, gy, gh, gc, mask)

    leaves = [t.double().requires_grad_() for t in (xp, h0, c0, w)]
    cell, p = LSTMCell(1, H), {"weight_hh": leaves[3]}
    y_ref, end = reference(cell, p, leaves[0], tuple(leaves[1:3]), mask)
    g = grads_of(y_ref, end, leaves, gy, (gh, gc))
    check({"y": y, "h": h, "c": c, "xp.grad": dxp, "h0.grad": dh0, "c0.grad": dc0, "w.grad": dw},
          {"y": y_ref, "h": end[0], "c": end[1], "xp.grad": g[0], "h0.grad": g[1],
           "c0.grad": g[2], "w.grad": g[3]}, tol)
    assert y.dtype == dxp.dtype == dtype and dw.dtype == w.dtype and h.dtype == torch.float32


def run_gru(K: int, B: int, H: int, dtype: torch.dtype, masked: bool, bias: bool,
            tol: float) -> None:
    """As :func:`run_lstm`, for the GRU with or without ``b_hh``."""
    xp, w, b, h0, _, gy, gh, _ = inputs(K, B, H, 3, dtype, bias)
    mask = make_mask(K, B) if masked else None
    y, h, res = persistent.gru_forward(xp, w, b, h0, mask, keep=True)
    dxp, dh0, dw, db = persistent.gru_backward(res, w, b, gy, gh, mask)

    leaves = [t.double().requires_grad_() for t in (xp, h0, w, *([b] if bias else []))]
    p = {"weight_hh": leaves[2], **({"bias_hh": leaves[3]} if bias else {})}
    y_ref, end = reference(GRUCell(1, H, bias=bias), p, leaves[0], (leaves[1],), mask)
    g = grads_of(y_ref, end, leaves, gy, (gh,))
    got = {"y": y, "h": h, "xp.grad": dxp, "h0.grad": dh0, "w.grad": dw}
    want = {"y": y_ref, "h": end[0], "xp.grad": g[0], "h0.grad": g[1], "w.grad": g[2]}
    if bias:
        got["b.grad"], want["b.grad"] = db, g[3]
        assert db.dtype == b.dtype
    else:
        assert db is None
    check(got, want, tol)


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("K,B,H", SIZES)
def test_lstm_float32(K, B, H, masked):
    run_lstm(K, B, H, torch.float32, masked, TOL[torch.float32])


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("K,B,H", SIZES)
def test_gru_float32(K, B, H, masked, bias):
    run_gru(K, B, H, torch.float32, masked, bias, TOL[torch.float32])


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("K,B,H", [(37, 19, 45), (7, 3, 128)])
def test_lstm_low_precision(K, B, H, dtype):
    run_lstm(K, B, H, dtype, True, TOL[dtype])


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("K,B,H", [(37, 19, 45), (7, 3, 128)])
def test_gru_low_precision(K, B, H, dtype):
    run_gru(K, B, H, dtype, True, True, TOL[dtype])


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
def test_keep_false_same_result(masked):
    """Without residuals the kernels store nothing per step but compute the same chunk."""
    K, B, H = 7, 19, 45
    mask = make_mask(K, B) if masked else None
    xp, w, _, h0, c0, *_ = inputs(K, B, H, 4, torch.float32, bias=False)
    kept, lost = (persistent.lstm_forward(xp, w, h0, c0, mask, keep) for keep in (True, False))
    assert lost[3] is None
    for a, e in zip(lost[:3], kept[:3]):
        assert torch.equal(a, e)
    xp, w, b, h0, *_ = inputs(K, B, H, 3, torch.float32, bias=True)
    kept, lost = (persistent.gru_forward(xp, w, b, h0, mask, keep) for keep in (True, False))
    assert lost[2] is None
    for a, e in zip(lost[:2], kept[:2]):
        assert torch.equal(a, e)


def test_no_weight_gradient():
    """need_w/need_b false: no weight GEMM, the other gradients unchanged."""
    K, B, H = 7, 3, 5
    xp, w, _, h0, c0, gy, gh, gc = inputs(K, B, H, 4, torch.float32, bias=False)
    res = persistent.lstm_forward(xp, w, h0, c0, None, keep=True)[3]
    full, part = (persistent.lstm_backward(res, w, gy, gh, gc, None, need_w=need)
                  for need in (True, False))
    assert part[3] is None and all(torch.equal(a, e) for a, e in zip(part[:3], full[:3]))
    xp, w, b, h0, *_ = inputs(K, B, H, 3, torch.float32, bias=True)
    res = persistent.gru_forward(xp, w, b, h0, None, keep=True)[2]
    full = persistent.gru_backward(res, w, b, gy, gh, None)
    part = persistent.gru_backward(res, w, b, gy, gh, None, need_w=False, need_b=False)
    assert part[2] is None and part[3] is None
    assert all(torch.equal(a, e) for a, e in zip(part[:2], full[:2]))


def test_supported_and_errors():
    assert persistent.supported(1) and persistent.supported(128) and not persistent.supported(129)
    z = functools.partial(torch.zeros, device=DEVICE)
    with pytest.raises(ValueError, match="hidden size"):
        persistent.lstm_forward(z(1, 1, 4 * 129), z(4 * 129, 129), z(1, 129), z(1, 129),
                                None, False)
    with pytest.raises(ValueError, match="mask must be"):
        persistent.lstm_forward(z(2, 3, 20), z(20, 5), z(3, 5), z(3, 5),
                                z(3, 2, dtype=torch.bool), False)
    with pytest.raises(TypeError, match="float32, bfloat16 or float16"):
        persistent.gru_forward(z(1, 1, 15, dtype=torch.float64), z(15, 5), None, z(1, 5),
                               None, False)


def test_custom_ops_fake_and_compile():
    """The launchers are opaque custom ops: their fake implementations match the real
    outputs (torch.library.opcheck), so torch.compile traces them in one graph."""
    K, B, H = 3, 3, 5
    mask = make_mask(K, B)
    xp, w, b, h0, c0, gy, gh, gc = inputs(K, B, H, 4, torch.float32, bias=False)
    tests = ("test_schema", "test_faketensor")
    for keep in (True, False):
        torch.library.opcheck(torch.ops.revrnn.persistent_lstm_forward,
                              (xp, w, h0, c0, mask, keep), test_utils=tests)
    act, hs, cs = persistent.lstm_forward(xp, w, h0, c0, mask, True)[3]
    torch.library.opcheck(torch.ops.revrnn.persistent_lstm_backward,
                          (act, hs, cs, w, gy, gh, gc, mask, True), test_utils=tests)
    xp, w, b, h0, *_ = inputs(K, B, H, 3, torch.float32, bias=True)
    torch.library.opcheck(torch.ops.revrnn.persistent_gru_forward, (xp, w, b, h0, None, False),
                          test_utils=tests)
    act, hn, hs = persistent.gru_forward(xp, w, b, h0, mask, True)[2]
    torch.library.opcheck(torch.ops.revrnn.persistent_gru_backward,
                          (act, hn, hs, w, gy, gh, mask, True, True), test_utils=tests)
    compiled = torch.compile(persistent.gru_forward, backend="aot_eager", fullgraph=True)
    got, want = compiled(xp, w, b, h0, mask, True), persistent.gru_forward(xp, w, b, h0, mask, True)
    assert all(torch.equal(a, e) for a, e in zip(got[:2], want[:2]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_gpu_long_sequence(dtype):
    """B = 16, H = 128, T = 1000 in one chunk: the compiled kernels (not the interpreter),
    where a TF32 dot (~1e-3 per step) would break the float32 bound. Over 1000 steps the
    rounding compounds further than over 37, hence 4x the short-chunk bounds."""
    run_lstm(1000, 16, 128, dtype, True, 4 * TOL[dtype])
    run_gru(1000, 16, 128, dtype, True, True, 4 * TOL[dtype])
