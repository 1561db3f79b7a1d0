"""g-LSTM: equations against an independent loop, closed neurons bit-exact, time-gate gradients,
budget, memory strategies, variable length."""
from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from revrnn.cells.glstm.sparse import gated_projection, projection_blocks
from revrnn.nn.glstm import GLSTM
from utils import (assert_close_all, assert_packed_matches_separate, assert_recompute_matches_store, gradcheck_module,
                   grads, rel_err)

F64 = torch.float64


def glstm(**kw) -> GLSTM:
    kw = {"t_max": 4.0, "dtype": F64, "backend": "reference", **kw}
    return GLSTM(3, 3, **kw)


def set_gates(m: GLSTM, mu: list[float], sigma: list[float]) -> None:
    with torch.no_grad():
        for name, _ in m.named_parameters():
            if name.startswith("mu_"):
                getattr(m, name).copy_(torch.tensor(mu))
            elif name.startswith("sigma_"):
                getattr(m, name).copy_(torch.tensor(sigma))


def gate_loop(x: Tensor, h: Tensor, c: Tensor, m: GLSTM, suffix: str, threshold: float):
    """The g-LSTM written out: torch.nn.LSTMCell for (ĥ, ĉ), then the Gaussian time gate."""
    cell = nn.LSTMCell(x.shape[-1], h.shape[-1], dtype=F64)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(m, name + suffix))
    mu, sigma = getattr(m, "mu" + suffix).tolist(), getattr(m, "sigma" + suffix).tolist()
    outs = []
    for t in range(x.shape[0]):
        h_hat, c_hat = cell(x[t], (h, c))
        k = [math.exp(-(t - mu_n) ** 2 / (2 * s_n ** 2)) for mu_n, s_n in zip(mu, sigma)]
        k = torch.tensor([kn if kn >= threshold else 0.0 for kn in k], dtype=F64)
        h, c = k * h_hat + (1 - k) * h, k * c_hat + (1 - k) * c
        outs.append(h)
    return torch.stack(outs), h, c


def test_matches_independent_loop_both_directions():
    """Forward: the loop above; reverse: the same loop on the flipped sequence, t counted from
    its first processed step (the last element)."""
    torch.manual_seed(0)
    T, B, I, H = 9, 2, 4, 5
    m = GLSTM(I, H, bidirectional=True, t_max=T, sigma_fraction=0.15, dtype=F64, backend="reference")
    x = torch.randn(T, B, I, dtype=F64)
    h0, c0 = torch.randn(2, B, H, dtype=F64), torch.randn(2, B, H, dtype=F64)
    out, (h_n, c_n) = m(x, (h0, c0))
    assert 0 < m.open_fraction(T) < 1  # some neuron-steps closed, some open
    fwd = gate_loop(x, h0[0], c0[0], m, "_l0", 1e-3)
    rev = gate_loop(x.flip(0), h0[1], c0[1], m, "_l0_reverse", 1e-3)
    assert rel_err(out[..., :H], fwd[0]) < 1e-12 and rel_err(out[..., H:], rev[0].flip(0)) < 1e-12
    assert rel_err(h_n, torch.stack([fwd[1], rev[1]])) < 1e-12
    assert rel_err(c_n, torch.stack([fwd[2], rev[2]])) < 1e-12


def test_closed_neurons_keep_h_and_c_bit_exactly():
    """Neuron 0 is open only at t = 1, 2, 3 (k(0) = k(4) = e^-8 < 1e-3), neuron 1 only at
    t = 5, neuron 2 never (μ far away): at every closed step h and c are copied exactly."""
    torch.manual_seed(0)
    m = GLSTM(3, 3, t_max=8, dtype=torch.float32, backend="reference")
    set_gates(m, [2.0, 5.0, 500.0], [0.5, 0.2, 1.0])
    cell, p = m.cells[0], m.cell_params(0)
    opened = {0: {1, 2, 3}, 1: {5}, 2: set()}
    x = torch.randn(8, 4, 3)
    state = (torch.randn(4, 3), torch.randn(4, 3))
    xp = cell.project(p, x, None, False)
    for t in range(8):
        new = cell.step(p, xp[t], state, t, {})
        for n in range(3):
            for before, after in zip(state, new):
                if t in opened[n]:
                    assert not torch.equal(before[:, n], after[:, n])
                else:
                    assert torch.equal(before[:, n], after[:, n])
        state = new
    # the module agrees: the output of a closed neuron repeats the previous output exactly
    h0 = torch.randn(1, 4, 3)
    out, _ = m(x, (h0, torch.zeros(1, 4, 3)))
    prev = torch.cat([h0, out[:-1]])
    for t in range(8):
        for n in range(3):
            assert torch.equal(out[t, :, n], prev[t, :, n]) == (t not in opened[n])


def test_gradcheck_full_gaussian_two_layers_bidirectional():
    torch.manual_seed(0)
    m = glstm(num_layers=2, bidirectional=True, gate_threshold=0.0)
    gradcheck_module(m, torch.randn(4, 2, 3, dtype=F64))


def test_gradcheck_with_closed_neurons():
    """With the threshold active: gradients wrt μ, σ (and everything else) match finite
    differences where the gates are open, and closed neuron-steps pass gradients through."""
    torch.manual_seed(0)
    m = glstm(gate_threshold=1e-3)
    mu, sigma = [0.3, 2.0, 40.0], [0.6, 1.5, 1.0]
    set_gates(m, mu, sigma)
    k = torch.tensor([[math.exp(-(t - a) ** 2 / (2 * s * s)) for a, s in zip(mu, sigma)] for t in range(4)])
    assert (k < 1e-3).any() and (k > 1e-3).any()
    assert ((k.log() - math.log(1e-3)).abs() > 0.5).all()  # no gate near the discontinuity
    hx = (torch.randn(1, 2, 3, dtype=F64), torch.randn(1, 2, 3, dtype=F64))
    gradcheck_module(m, torch.randn(4, 2, 3, dtype=F64), hx)


def test_recompute_matches_store():
    """The gate depends on t: chunked recomputation must replay the absolute step index."""
    assert_recompute_matches_store(lambda **kw: glstm(num_layers=2, bidirectional=True, t_max=9.0, **kw),
                                   torch.randn(9, 2, 3, dtype=F64))


def test_packed_matches_separate():
    torch.manual_seed(0)
    m = glstm(num_layers=2, bidirectional=True, t_max=6.0)
    assert_packed_matches_separate(m, torch.randn(6, 3, 3, dtype=F64), [4, 6, 1])


def test_budget_and_open_fraction():
    torch.manual_seed(0)
    T = 12
    m = glstm(t_max=T, bidirectional=True)
    set_gates(m, [1.0, 6.0, 30.0], [2.0, 0.7, 3.0])
    t = torch.arange(T, dtype=F64)[:, None]
    mu, sigma = m.mu_l0.detach(), m.sigma_l0.detach()
    k = torch.exp(-(t - mu) ** 2 / (2 * sigma ** 2))
    k = torch.where(k < 1e-3, 0.0, k)
    assert rel_err(m.budget(T), k.mean()) < 1e-12  # both directions hold the same gates here
    assert m.open_fraction(T) == pytest.approx((k > 0).double().mean().item(), abs=1e-12)
    # spec §6: ∂k/∂μ = k (t − μ)/σ², ∂k/∂σ = k (t − μ)²/σ³, on the open steps
    g_mu, g_sigma = torch.autograd.grad(m.budget(T), [m.mu_l0, m.sigma_l0])
    n = 2 * T * 3
    assert rel_err(g_mu, (k * (t - mu) / sigma ** 2).sum(0) / n) < 1e-12
    assert rel_err(g_sigma, (k * (t - mu) ** 2 / sigma ** 3).sum(0) / n) < 1e-12


def test_rescale_time_stretches_the_gates():
    """After ``rescale_time(f)`` the gate at step f·t is the one that was at step t (a curriculum
    lengthening the sequence f times keeps each neuron's window at the same relative place)."""
    m = GLSTM(3, 5, num_layers=2, t_max=40.0, dtype=torch.float64, gate_threshold=0.0)
    t = torch.arange(40)
    before = [c.time_gate(m.cell_params(i), t) for i, c in enumerate(m.cells)]
    m.rescale_time(2.5)
    after = [c.time_gate(m.cell_params(i), t * 2.5) for i, c in enumerate(m.cells)]
    for b, a in zip(before, after):
        assert torch.allclose(a, b, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="factor must be positive"):
        m.rescale_time(0)


def test_sigma_zero_is_guarded():
    """σ = 0 gives a delta gate at t = μ: no NaN in output or gradients."""
    torch.manual_seed(0)
    m = glstm(t_max=6.0)
    set_gates(m, [2.0, 3.5, 0.0], [0.0, 0.0, 1.0])
    k = m.cells[0].time_gate(m.cell_params(0), torch.arange(6))
    assert torch.equal(k[:, 0], torch.tensor([0, 0, 1, 0, 0, 0], dtype=F64))
    assert not k[:, 1].any()
    out, (h_n, c_n) = m(torch.randn(6, 2, 3, dtype=F64))
    (out.sum() + c_n.sum() + m.budget(6)).backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


@pytest.mark.parametrize("threshold", [1e-3, 0.3, 1e-30, 1e-300, 0.0])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_time_gate_clamp_changes_no_gate(threshold, dtype):
    """The gate's exponent is clamped a little below log(gate_threshold) (exp is slow where it
    underflows): every gate and both parameters' gradients are bit-identical to the formula's
    without the clamp, with gates far into the tails (σ down to 0.1 steps, T = 300)."""
    from revrnn.cells.glstm.spec import SIGMA_MIN, GLSTMCell
    torch.manual_seed(0)
    cell = GLSTMCell(2, 512, t_max=300.0, gate_threshold=threshold)
    mu = (torch.rand(512, dtype=dtype) * 300).requires_grad_()
    sigma = (0.1 + torch.rand(512, dtype=dtype) * 30).requires_grad_()
    t = torch.arange(300, dtype=dtype)[:, None]
    want = torch.exp(-(t - mu).square() / (2 * sigma.square().clamp_min(SIGMA_MIN ** 2)))
    want = torch.where(want < threshold, torch.zeros((), dtype=dtype), want)
    got = cell.time_gate({"mu": mu, "sigma": sigma}, torch.arange(300))
    assert torch.equal(got, want) and 0 < (got > 0).double().mean() < 1
    g = torch.randn(300, 512, dtype=dtype)
    for a, b in zip(torch.autograd.grad(got, (mu, sigma), g), torch.autograd.grad(want, (mu, sigma), g)):
        assert torch.equal(a, b)


def test_default_init():
    torch.manual_seed(0)
    m = GLSTM(3, 2000, t_max=200)
    assert m.mu_l0.min() >= 0 and m.mu_l0.max() <= 200 and m.mu_l0.std() > 50
    assert torch.equal(m.sigma_l0, torch.full((2000,), 20.0))
    # documented: ≈ 2a − a² open neuron-steps over t_max, a = 0.1·sqrt(2 ln 1000)
    a = 0.1 * math.sqrt(2 * math.log(1000))
    assert m.open_fraction(200) == pytest.approx(2 * a - a * a, abs=0.03)


def test_bad_arguments():
    with pytest.raises(TypeError, match="t_max"):
        GLSTM(3, 4)
    with pytest.raises(ValueError, match="t_max must be a finite number > 0, got 0"):
        GLSTM(3, 4, t_max=0)
    with pytest.raises(ValueError, match="gate_threshold must be < 1, got 1.5"):
        GLSTM(3, 4, t_max=10, gate_threshold=1.5)
    with pytest.raises(ValueError, match="sigma_fraction .* got -0.1"):
        GLSTM(3, 4, t_max=10, sigma_fraction=-0.1)


# -- the gated input projection of the sparse paths ----------------------------------------
def narrow_gates(T: int, H: int, seed: int = 0) -> Tensor:
    """Time gates (T, H) as a g-LSTM with narrow windows has them: most unit-steps closed."""
    torch.manual_seed(seed)
    m = GLSTM(2, H, t_max=T, sigma_fraction=0.03, dtype=F64, backend="reference")
    return m.cells[0].time_gate(m.cell_params(0), torch.arange(T)).detach()


def test_projection_blocks_cover_the_steps_and_their_open_units(free_blocks):
    k = narrow_gates(50, 16)
    open_ = k > 0
    assert 0.02 < open_.double().mean() < 0.3
    blocks = projection_blocks(open_, B=64, I=64)
    assert blocks is not None and blocks[0][0] == 0 and blocks[-1][1] == 50
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    for s, e, units in blocks:
        assert torch.equal(units, open_[s:e].any(0).nonzero().flatten())
    assert projection_blocks(torch.ones(50, 16, dtype=torch.bool), B=64, I=64) is None  # dense is cheaper
    assert projection_blocks(open_, B=0, I=64) is None


@pytest.mark.parametrize("bias", [True, False])
def test_gated_projection_is_the_projection_where_steps_read_it(bias, free_blocks):
    """Open unit-steps get x W^T + b in all four gates' columns, units closed throughout get 0;
    for a gradient that is zero at closed unit-steps (what every path passes back), the gradients
    of x, W and b are the dense projection's."""
    T, B, I, H = 50, 3, 5, 16
    k = narrow_gates(T, H)
    torch.manual_seed(1)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    w = torch.randn(4 * H, I, dtype=F64, requires_grad=True)
    b = torch.randn(4 * H, dtype=F64, requires_grad=True) if bias else None
    xp = gated_projection(x, w, b, k)
    dense = torch.nn.functional.linear(x, w, b)
    opened = (k > 0).repeat(1, 4)[:, None, :].expand(T, B, 4 * H)
    assert rel_err(xp[opened], dense[opened]) < 1e-12
    blocks = projection_blocks(k > 0, B, I)
    for s, e, units in blocks:
        shut = torch.ones(4, H, dtype=torch.bool)
        shut[:, units] = False
        assert (xp[s:e][..., shut.flatten()] == 0).all()
    assert sum(len(u) * (e - s) for s, e, u in blocks) < 0.5 * T * H
    g = torch.randn(T, B, 4 * H, dtype=F64) * opened
    leaves = [x, w] + ([b] if bias else [])
    got, want = torch.autograd.grad(xp, leaves, g), torch.autograd.grad(dense, leaves, g)
    for a, e in zip(got, want):
        assert rel_err(a, e) < 1e-12
    assert torch.autograd.gradcheck(lambda *t: gated_projection(*t, k), (x[:12], w, b))


def test_sparse_path_projects_only_open_unit_steps(glstm_sparse):
    """``project_steps`` on a backend's sparse path (the route of Triton's, which reads a
    projection) does a fraction of the dense projection's multiply-adds (forward and backward);
    the module's results stay those of the reference; under autocast it projects densely."""
    backend = glstm_sparse("cpu")
    torch.manual_seed(0)
    T, B, I, H = 60, 4, 32, 32
    m = GLSTM(I, H, t_max=T, sigma_fraction=0.02, dtype=F64, backend="cpu")
    cell, p = m.cells[0], m.cell_params(0)
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    assert m.open_fraction(T) < 0.2
    flops = {}
    for mode in ("never", "always"):
        backend.glstm_sparse = mode
        with FlopCounterMode(display=False) as count:
            cell.project_steps(p, x, None, True, 0, backend).sum().backward()
        flops[mode] = count.get_total_flops()
    assert flops["always"] < 0.5 * flops["never"]
    ref = GLSTM(I, H, t_max=T, sigma_fraction=0.02, dtype=F64, backend="reference")
    ref.load_state_dict(m.state_dict())
    assert_close_all(grads(m, x), grads(ref, x), 1e-12)
    m32 = GLSTM(I, H, t_max=T, sigma_fraction=0.02, backend="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xp = m32.cells[0].project_steps(m32.cell_params(0), x.float(), None, True, 0, backend)
    assert xp.dtype == torch.bfloat16


@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_sparse_path_calls_from_a_later_step(glstm_sparse, memory):
    """Called from step t0 (a stream's later chunk), the sparse path projects the gates of steps
    t0 .. and gives the reference's results."""
    glstm_sparse("cpu").glstm_sparse = "always"
    torch.manual_seed(0)
    T, t0 = 12, 30
    kw = dict(t_max=40.0, sigma_fraction=0.03, dtype=F64)
    m = GLSTM(4, 8, backend="cpu", memory=memory, **kw)
    ref = GLSTM(4, 8, backend="reference", **kw)
    ref.load_state_dict(m.state_dict())
    k = m.cells[0].time_gate(m.cell_params(0), torch.arange(t0, t0 + T))
    assert 0 < (k > 0).double().mean() < 0.5 and ((k > 0).any(0) != (k[:1] > 0)).any()

    class At(nn.Module):  # the module called from step t0
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, hx=None):
            return self.inner(x, hx, t0=t0)
    x = torch.randn(T, 2, 4, dtype=F64)
    assert_close_all(grads(At(m), x), grads(At(ref), x), 1e-12)
