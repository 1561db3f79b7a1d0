"""revrnn.nn.MGU (Zhou et al. 2016) and Heck & Salem's MGU1/2/3 against the equations."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from revrnn.nn.mgu import MGU
from utils import assert_packed_matches_separate, assert_recompute_matches_store, gradcheck_module, n_params, rel_err

F64 = torch.float64
VARIANTS = [0, 1, 2, 3]


def mgu_loop(x: Tensor, h: Tensor, p: dict[str, Tensor], variant: int) -> tuple[Tensor, Tensor]:
    """The MGU equations step by step, one layer and direction (parameters of layer 0)."""
    H = h.shape[1]
    W, U = p["weight_ih_l0"], p["weight_hh_l0"]
    b = p["bias_ih_l0"] + p["bias_hh_l0"]
    outs = []
    for x_t in x:
        if variant == 0:
            f = torch.sigmoid(x_t @ W[:H].T + b[:H] + h @ U[:H].T)
            cand_x = x_t @ W[H:].T + b[H:]
        else:
            cand_x = x_t @ W.T + b
            f = {1: lambda: h @ U[:H].T + p["bias_gates_l0"],
                 2: lambda: h @ U[:H].T,
                 3: lambda: p["bias_gates_l0"].expand_as(h)}[variant]()
            f = torch.sigmoid(f)
        n = torch.tanh(cand_x + (f * h) @ U[-H:].T)
        h = (1 - f) * h + f * n
        outs.append(h)
    return torch.stack(outs), h


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_matches_equations(variant):
    torch.manual_seed(variant)
    m = MGU(3, 5, variant=variant, dtype=F64)
    x, h0 = torch.randn(6, 4, 3, dtype=F64), torch.randn(1, 4, 5, dtype=F64)
    out, h_n = m(x, h0)
    p = dict(m.named_parameters())
    if variant == 2:  # no gate bias: bias_gates must not exist
        assert "bias_gates_l0" not in p
    want_out, want_h = mgu_loop(x, h0[0], p, variant)
    assert rel_err(out, want_out) < 1e-13
    assert rel_err(h_n[0], want_h) < 1e-13


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradcheck(variant):
    torch.manual_seed(10 + variant)
    m = MGU(3, 3, num_layers=2, bidirectional=True, variant=variant, dtype=F64)
    x = torch.randn(4, 2, 3, dtype=F64)
    gradcheck_module(m, x, torch.randn(4, 2, 3, dtype=F64))


def test_gradcheck_no_bias_batch_first():
    torch.manual_seed(20)
    gradcheck_module(MGU(3, 3, bias=False, batch_first=True, variant=1, dtype=F64),
                     torch.randn(2, 4, 3, dtype=F64))


@pytest.mark.parametrize("variant", VARIANTS)
def test_recompute_matches_store(variant):
    x = torch.randn(7, 2, 3, dtype=F64)
    assert_recompute_matches_store(
        lambda **kw: MGU(3, 4, num_layers=2, bidirectional=True, variant=variant, dtype=F64, **kw), x)


@pytest.mark.parametrize("variant", [0, 3])
def test_packed_matches_separate(variant):
    torch.manual_seed(30)
    m = MGU(3, 4, num_layers=2, bidirectional=True, variant=variant, dtype=F64)
    assert_packed_matches_separate(m, torch.randn(5, 3, 3, dtype=F64), [3, 5, 1])


def test_mgu3_gate_is_constant_over_time():
    """With the candidate switched off (n = 0), h_t = (1 - f) h_{t-1}: MGU3 decays every unit at
    the constant rate 1 - σ(b_f) whatever x and h; MGU1's rate moves with h."""
    torch.manual_seed(40)
    x, h0 = torch.randn(6, 3, 2, dtype=F64) * 3, torch.randn(1, 3, 4, dtype=F64)
    ratios = {}
    for variant in (3, 1):
        m = MGU(2, 4, variant=variant, dtype=F64)
        with torch.no_grad():
            m.weight_ih_l0.zero_(), m.bias_ih_l0.zero_(), m.bias_hh_l0.zero_()
            m.weight_hh_l0[-4:].zero_()
        out, _ = m(x, h0)
        h = torch.cat([h0, out])
        ratios[variant] = h[1:] / h[:-1]
    m3 = ratios[3]
    assert rel_err(m3, m3[:1, :1].expand_as(m3)) < 1e-14
    assert (ratios[1] - ratios[1][:1, :1]).abs().max() > 1e-3


def test_mgu3_rate_is_one_minus_sigmoid_bias():
    torch.manual_seed(41)
    m = MGU(2, 4, variant=3, dtype=F64)
    with torch.no_grad():
        m.weight_ih_l0.zero_(), m.bias_ih_l0.zero_(), m.bias_hh_l0.zero_(), m.weight_hh_l0.zero_()
    h0 = torch.randn(1, 3, 4, dtype=F64)
    out, _ = m(torch.randn(5, 3, 2, dtype=F64), h0)
    rate = 1 - torch.sigmoid(m.bias_gates_l0.detach())
    want = h0[0] * rate ** torch.arange(1, 6, dtype=F64)[:, None, None]
    assert rel_err(out, want) < 1e-13


def test_parameter_counts():
    I, H = 7, 5
    gru = nn.GRU(I, H)
    count = {v: n_params(MGU(I, H, variant=v)) for v in VARIANTS}
    # MGU has 2 blocks where the GRU has 3 (torch-style double biases in both).
    assert 3 * count[0] == 2 * n_params(gru) == 3 * (2 * H * I + 2 * H * H + 4 * H)
    # Heck & Salem: MGU1 drops W_f (H·I); its gate keeps one bias b_f instead of torch's two.
    assert count[1] == count[0] - H * I - H
    assert count[2] == count[1] - H  # ... and MGU2 drops b_f
    assert count[3] == count[1] - H * H  # MGU3 drops U_f instead
    no_bias = {v: n_params(MGU(I, H, bias=False, variant=v)) for v in VARIANTS}
    assert no_bias == {0: 2 * H * I + 2 * H * H, 1: H * I + 2 * H * H + H,
                       2: H * I + 2 * H * H, 3: H * I + H * H + H}


def test_bad_arguments():
    m = MGU(3, 4)
    with pytest.raises(RuntimeError, match="input_size"):
        m(torch.randn(5, 2, 4))
    with pytest.raises(RuntimeError, match="hidden size"):
        m(torch.randn(5, 2, 3), torch.randn(1, 2, 5))
    for bad in (4, -1, True, "1"):
        with pytest.raises(ValueError, match=f"variant.*{bad!r}"):
            MGU(3, 4, variant=bad)
