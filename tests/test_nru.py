"""NRU (official-code variant): equality with the official cell, gradients, memory strategies,
variable length, long-sequence numerics, low-precision state."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from revrnn.cells.nru import l5_heads
from revrnn.nn.nru import NRU
from utils import assert_packed_matches_separate, assert_recompute_matches_store, gradcheck_module, rel_err

F64 = torch.float64


def nru(**kw) -> NRU:
    kw = {"memory_size": 8, "num_heads": 2, "dtype": F64, "backend": "reference", **kw}
    return NRU(3, 3, **kw)


class OfficialNRUCell(nn.Module):
    """apsarath/NRU ``NRUCell.forward`` (layer norm off), with its four head Linears."""

    def __init__(self, I: int, H: int, M: int, k: int, use_relu: bool):
        super().__init__()
        r = math.isqrt(M * k)
        self.k, self.M, self.use_relu = k, M, use_relu
        self.hmi2h = nn.Linear(I + H + M, H, dtype=F64)
        self.hm2alpha = nn.Linear(H + M, k, dtype=F64)
        self.hm2beta = nn.Linear(H + M, k, dtype=F64)
        self.hm2v_alpha = nn.Linear(H + M, 2 * r, dtype=F64)
        self.hm2v_beta = nn.Linear(H + M, 2 * r, dtype=F64)

    def phi(self, x: Tensor) -> Tensor:
        return F.relu(x) if self.use_relu else x

    def vectors(self, lin: nn.Linear, hm: Tensor) -> Tensor:
        u = lin(hm).chunk(2, dim=1)
        v = torch.bmm(u[0].unsqueeze(2), u[1].unsqueeze(1)).view(-1, self.k, self.M)
        return F.normalize(self.phi(v), p=5, dim=2, eps=1e-12)

    def forward(self, x: Tensor, h: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
        h = F.relu(self.hmi2h(torch.cat((x, h, m), 1)))
        hm = torch.cat((h, m), 1)
        alpha, beta = self.phi(self.hm2alpha(hm)), self.phi(self.hm2beta(hm))
        add = alpha.unsqueeze(2) * self.vectors(self.hm2v_alpha, hm)
        forget = beta.unsqueeze(2) * self.vectors(self.hm2v_beta, hm)
        return h, m + torch.mean(add - forget, dim=1)

    def load_from(self, p: dict[str, Tensor]) -> None:
        k, r = self.k, math.isqrt(self.M * self.k)
        with torch.no_grad():
            self.hmi2h.weight.copy_(torch.cat((p["weight_ih"], p["weight_hh"]), 1))
            self.hmi2h.bias.copy_(p["bias_ih"])
            rows = [k, k, 2 * r, 2 * r]
            heads = zip(p["weight_heads"].split(rows), p["bias_heads"].split(rows))
            for lin, (w, b) in zip((self.hm2alpha, self.hm2beta, self.hm2v_alpha, self.hm2v_beta), heads):
                lin.weight.copy_(w)
                lin.bias.copy_(b)


@pytest.mark.parametrize("M,k,use_relu", [(8, 2, False), (9, 4, True), (16, 4, False)])
def test_matches_official_cell(M, k, use_relu):
    """Forward and every gradient equal the official unsplit cell (float64)."""
    torch.manual_seed(0)
    I, H, T, B = 5, 6, 12, 3
    m = NRU(I, H, memory_size=M, num_heads=k, use_relu=use_relu, dtype=F64, backend="reference")
    ref = OfficialNRUCell(I, H, M, k, use_relu)
    ref.load_from(m.cell_params(0))
    x = torch.randn(T, B, I, dtype=F64, requires_grad=True)
    h0, m0 = torch.randn(1, B, H, dtype=F64), torch.randn(1, B, M, dtype=F64)

    out, (h_n, m_n) = m(x, (h0, m0))
    h, mem, outs = h0[0], m0[0], []
    for t in range(T):
        h, mem = ref(x[t], h, mem)
        outs.append(h)
    want = torch.stack(outs)
    assert rel_err(out, want) < 1e-12
    assert rel_err(h_n[0], h) < 1e-12 and rel_err(m_n[0], mem) < 1e-12

    w = torch.randn_like(out)
    loss_got = (w * out).sum() + m_n.square().sum()
    loss_want = (w * want).sum() + mem.square().sum()
    g_got = torch.autograd.grad(loss_got, [x, m.weight_hh_l0, m.weight_heads_l0])
    g_want = torch.autograd.grad(loss_want, [x, ref.hmi2h.weight, ref.hm2v_alpha.weight])
    assert rel_err(g_got[0], g_want[0]) < 1e-10
    assert rel_err(g_got[1], g_want[1][:, I:]) < 1e-10
    r = math.isqrt(M * k)
    assert rel_err(g_got[2][2 * k:2 * k + 2 * r], g_want[2]) < 1e-10


def test_default_init_is_linear_default_over_concatenated_fan_in():
    torch.manual_seed(0)
    I, H, M = 7, 40, 64
    m = NRU(I, H, memory_size=M, num_heads=4)
    for name, fan_in in (("weight_ih_l0", I + H + M), ("weight_hh_l0", I + H + M), ("bias_ih_l0", I + H + M),
                         ("weight_heads_l0", H + M), ("bias_heads_l0", H + M)):
        t, bound = getattr(m, name), 1 / math.sqrt(fan_in)
        assert t.abs().max() <= bound and t.abs().max() > 0.9 * bound, name


def test_gradcheck_two_layers_bidirectional():
    torch.manual_seed(0)
    m = nru(num_layers=2, bidirectional=True, memory_size=4, num_heads=1)
    gradcheck_module(m, torch.randn(4, 2, 3, dtype=F64))


def test_gradcheck_relu_heads_with_initial_state():
    torch.manual_seed(1)
    m = nru(use_relu=True)  # M=8, k=2: two heads share one outer product
    hx = (torch.rand(1, 2, 3, dtype=F64), torch.randn(1, 2, 8, dtype=F64))
    gradcheck_module(m, torch.randn(4, 2, 3, dtype=F64), hx)


def test_recompute_matches_store():
    assert_recompute_matches_store(lambda **kw: nru(num_layers=2, bidirectional=True, **kw),
                                   torch.randn(9, 2, 3, dtype=F64))


def test_packed_matches_separate():
    torch.manual_seed(0)
    m = nru(num_layers=2, bidirectional=True)
    assert_packed_matches_separate(m, torch.randn(6, 3, 3, dtype=F64), [4, 6, 1])


@pytest.mark.parametrize("scale", [1e-20, 1e-3, 1.0, 1e6, 1e20])
def test_l5_normalisation_is_safe_and_official(scale):
    """Equal to the official ``F.normalize(p=5, eps=1e-12)`` computed in float64, also in float32
    at scales where that formula overflows (|v|^5 > 3e38) or hits its eps."""
    torch.manual_seed(0)
    p, q = torch.randn(4, 6, dtype=F64) * scale, torch.randn(4, 6, dtype=F64) * scale
    for relu in (False, True):
        v = (p[:, :, None] * q[:, None, :]).reshape(4, 3, 12)
        want = F.normalize(F.relu(v) if relu else v, p=5, dim=2, eps=1e-12)
        assert rel_err(l5_heads(p, q, 3, relu), want) < 1e-12
        assert rel_err(l5_heads(p.float(), q.float(), 3, relu).double(), want) < 1e-5
    if scale >= 1e6:  # the official formula in float32 gives zeros (|v|^5 = inf) or NaN (p q = inf)
        v32 = (p.float()[:, :, None] * q.float()[:, None, :]).reshape(4, 3, 12)
        official = F.normalize(v32, p=5, dim=2, eps=1e-12)
        assert not (torch.isfinite(official) & (official != 0)).any()


def memory_trajectory(m: NRU, x: Tensor) -> Tensor:
    """max |m_t| over batch and slots, for every step (running the cell step by step)."""
    cell, p = m.cells[0], m.cell_params(0)
    state, peaks = cell.initial_state(x.shape[1], x), []
    with torch.no_grad():
        xp = cell.project(p, x, None, False)
        for t in range(x.shape[0]):
            state = cell.step(p, xp[t], state, t, {})
            peaks.append(state[1].abs().max())
    return torch.stack(peaks)


def test_memory_grows_geometrically_at_default_init():
    """Spec §5.3: the official memory has no decay; at default init max|m| grows by orders of
    magnitude over 1000 steps (float64, so the growth itself is measured, not an overflow).
    Inputs are standard normal: the update is degree-1 homogeneous in (h, m) and x only enters
    additively through h, so the input scale sets the starting size, not the growth rate."""
    torch.manual_seed(0)
    m = NRU(8, 32, memory_size=16, num_heads=4, dtype=F64)
    peaks = memory_trajectory(m, torch.randn(1000, 4, 8, dtype=F64))
    assert torch.isfinite(peaks).all()
    assert peaks[-1] > 1e12 * peaks[0]
    assert peaks[-1] > 1e20  # beyond anything fp16/bf16 could hold, and near float32's end


def test_long_sequence_finite_in_float32_official_size():
    """pMNIST size (H=212, M=256, k=4), default init, T=1000 in float32: the memory reaches
    ~1e15, where the official L5 formula would already return zeros in float32 (|v|^5
    overflows); with the safe normalisation output, state and gradients stay finite."""
    torch.manual_seed(0)
    m = NRU(1, 212, memory_size=256, num_heads=4, backend="reference")
    x = torch.randn(1000, 4, 1)
    out, (h_n, m_n) = m(x)
    assert torch.isfinite(out).all() and torch.isfinite(h_n).all() and torch.isfinite(m_n).all()
    assert m_n.abs().max() > 1e8  # the growth regime is really reached


def test_memory_clamp_keeps_long_sequences_finite():
    """Where the official dynamics overflow float32 within 1000 steps (small memory, seed as
    in the growth test), ``memory_clamp`` bounds the memory and keeps gradients finite."""
    torch.manual_seed(0)
    x = torch.randn(1000, 4, 8)
    m = NRU(8, 32, memory_size=16, num_heads=4, backend="reference")
    assert not torch.isfinite(memory_trajectory(m, x)).all()  # unclamped: overflows in float32

    torch.manual_seed(0)
    m = NRU(8, 32, memory_size=16, num_heads=4, memory_clamp=100.0, backend="reference", memory="recompute")
    peaks = memory_trajectory(m, x)
    assert torch.isfinite(peaks).all() and peaks.max() <= 100.0 and peaks.max() == 100.0
    out, (h_n, m_n) = m(x)
    (out.mean() + m_n.mean()).backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_clamp_is_the_only_change():
    torch.manual_seed(0)
    a = nru()
    b = nru(memory_clamp=1e6)
    b.load_state_dict(a.state_dict())
    x = torch.randn(5, 2, 3, dtype=F64)
    assert all(torch.equal(s, t) for s, t in zip(a(x)[1], b(x)[1]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_state_is_float32_under_low_precision(dtype):
    torch.manual_seed(0)
    full = NRU(3, 8, num_layers=2, memory_size=16, num_heads=4, backend="reference")
    half = NRU(3, 8, num_layers=2, memory_size=16, num_heads=4, dtype=dtype, backend="reference")
    half.load_state_dict(full.state_dict())
    x = torch.randn(20, 2, 3)
    out, (h_n, m_n) = half(x.to(dtype))
    assert out.dtype == h_n.dtype == m_n.dtype == torch.float32
    out.sum().backward()
    assert all(p.grad.dtype == dtype and torch.isfinite(p.grad).all() for p in half.parameters())
    # the same weights in float32 agree up to the low-precision weights and projections
    want, (_, m_want) = full(x.to(dtype).float())
    assert rel_err(out, want) < 5e-2 and rel_err(m_n, m_want) < 5e-2
    # a user-given state must be float32 too; float64 models keep float64
    with pytest.raises(ValueError, match="state dtype"):
        half(x.to(dtype), (h_n.to(dtype), m_n.to(dtype)))
    half(x.to(dtype), (h_n.detach(), m_n.detach()))
    assert nru()(torch.randn(2, 1, 3, dtype=F64))[1][1].dtype == F64


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"num_heads=3, memory_size=5"):
        NRU(3, 4, memory_size=5, num_heads=3)
    with pytest.raises(ValueError, match="memory_size must be greater than zero, got 0"):
        NRU(3, 4, memory_size=0)
    with pytest.raises(ValueError, match="memory_clamp .* got -1.0"):
        NRU(3, 4, memory_clamp=-1.0)
    m = NRU(3, 4, memory_size=9, num_heads=1)
    assert (m.weight_heads_l0.shape, m.bias_heads_l0.shape) == ((2 + 4 * 3, 13), (14,))
    assert not hasattr(NRU(3, 4, bias=False), "bias_ih_l0")
