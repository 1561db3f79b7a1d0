"""Bad input raises clear exceptions, with torch.nn's types and wording where it has them."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

import revrnn

MODULES = [(revrnn.nn.LSTM, nn.LSTM), (revrnn.nn.GRU, nn.GRU)]


def same_error(ours, theirs, call):
    """``call`` raises the same exception type and message on both modules."""
    with pytest.raises(Exception) as want:
        call(theirs)
    with pytest.raises(type(want.value)) as got:
        call(ours)
    return str(got.value), str(want.value)


@pytest.mark.parametrize("ours_cls,torch_cls", MODULES)
@pytest.mark.parametrize("case", ["input_size", "dims", "dtype", "empty", "state_shape", "state_dims"])
def test_forward_errors_match_torch(ours_cls, torch_cls, case):
    ours, theirs = ours_cls(3, 4, num_layers=2), torch_cls(3, 4, num_layers=2)
    lstm = torch_cls is nn.LSTM
    state = lambda *shape: (torch.zeros(*shape), torch.zeros(*shape)) if lstm else torch.zeros(*shape)
    call = {
        "input_size": lambda m: m(torch.randn(5, 2, 7)),
        "dims": lambda m: m(torch.randn(5, 2, 3, 1)),
        "dtype": lambda m: m(torch.randn(5, 2, 3, dtype=torch.float64)),
        "empty": lambda m: m(torch.randn(0, 2, 3)),
        "state_shape": lambda m: m(torch.randn(5, 2, 3), state(1, 2, 4)),
        "state_dims": lambda m: m(torch.randn(5, 2, 3), state(2, 4)),
    }[case]
    got, want = same_error(ours, theirs, call)
    assert got == want


@pytest.mark.parametrize("ours_cls,torch_cls", MODULES)
@pytest.mark.parametrize("kwargs", [dict(hidden_size=0), dict(dropout=1.5), dict(num_layers=0),
                                    dict(bias=1), dict(batch_first="yes"), dict(input_size=2.5)])
def test_constructor_errors_match_torch(ours_cls, torch_cls, kwargs):
    args = dict(input_size=3, hidden_size=4) | kwargs
    with pytest.raises(Exception) as want:
        torch_cls(**args)
    with pytest.raises(type(want.value), match=re.escape(str(want.value).split(",")[0])):
        ours_cls(**args)


def test_proj_size_errors_match_torch():
    for proj in (4, -1):
        with pytest.raises(ValueError) as want:
            nn.LSTM(3, 4, proj_size=proj)
        with pytest.raises(ValueError, match=str(want.value)):
            revrnn.nn.LSTM(3, 4, proj_size=proj)


def test_device_mismatch():
    m = revrnn.nn.GRU(3, 4)
    with pytest.raises(RuntimeError, match="input is on meta but the parameters are on cpu"):
        m(torch.empty(5, 2, 3, device="meta"))


def test_state_dtype_mismatch():
    with pytest.raises(ValueError, match=r"hx dtype \(torch.float64\)"):
        revrnn.nn.GRU(3, 4)(torch.randn(5, 2, 3), torch.zeros(1, 2, 4, dtype=torch.float64))


def test_unsorted_lengths_need_enforce_sorted_false():
    x = torch.randn(5, 3, 3)
    with pytest.raises(RuntimeError, match="enforce_sorted"):
        revrnn.nn.LSTM(3, 4)(pack_padded_sequence(x, torch.tensor([2, 5, 3])))
    out, _ = revrnn.nn.LSTM(3, 4)(pack_padded_sequence(x, torch.tensor([2, 5, 3]), enforce_sorted=False))
    assert out.data.shape == (10, 4)


@pytest.mark.parametrize("kwargs,match", [
    (dict(memory="everything"), "memory must be one of 'store', 'recompute', got 'everything'"),
    (dict(memory="recompute", checkpoint_every=0), "checkpoint_every must be a positive int or None, got 0"),
    (dict(backend="gpu"), "backend must be one of .*got 'gpu'"),
    (dict(memory="recompute", checkpoint_slots=0), "checkpoint_slots must be a positive int, got 0"),
    (dict(checkpoint_slots=4), "checkpoint_slots needs memory='recompute', got memory='store'"),
    (dict(memory="recompute", checkpoint_every=4, checkpoint_slots=4), "not both; got 4 and 4"),
])
def test_revrnn_keywords(kwargs, match):
    with pytest.raises(ValueError, match=match):
        revrnn.nn.GRU(3, 4, **kwargs)


def test_wrong_state_arity():
    with pytest.raises(RuntimeError, match="expected a state of 2 tensor"):
        revrnn.nn.LSTM(3, 4)(torch.randn(5, 2, 3), (torch.zeros(1, 2, 4),))
