"""The reversible encoder with attention over a stored slice (revrnn.seq2seq)."""
from __future__ import annotations

import pytest
import torch

import revrnn
from revrnn.seq2seq import Seq2Seq
from revrnn.trainer import Config, Trainer
from utils import assert_close_all

S, B, H, D = 23, 3, 12, 4


def model(slice_dim=D, memory="reversible", dtype=torch.float32):
    torch.manual_seed(0)
    return Seq2Seq(revrnn.nn.RevGRU(H, H, memory=memory, forget_bits=2), 10, H, slice_dim).to(dtype)


def saved_sizes(m, src, tgt) -> list[int]:
    """Sizes (elements) of every tensor autograd keeps for the backward of one loss."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(src, m.shifted(tgt)).sum().backward()
    return sizes


def test_attention_reads_only_the_slice():
    """The keys are the first ``slice_dim`` encoder units, copied; of the full width per source
    step, backward keeps only the encoder's input (the reversible backward's own); attending to
    the whole output keeps it twice more."""
    m = model()
    src, tgt = torch.randint(0, 10, (S, B)), torch.randint(0, 10, (7, B))
    keys, _ = m.encode(src)
    out, _ = m.encoder(m.src_embed(src))
    assert torch.equal(keys, out[..., :D]) and keys.untyped_storage().nbytes() == S * B * D * 4
    sizes = saved_sizes(m, src, tgt)
    assert S * B * D in sizes and sizes.count(S * B * H) == 1, sizes
    assert saved_sizes(model(slice_dim=None), src, tgt).count(S * B * H) == 3


def test_reversible_encoder_gradients_equal_stored():
    """float64: the reversible encoder's gradients are the stored one's (rounding only)."""
    src, tgt = torch.randint(0, 10, (S, B)), torch.randint(0, 10, (7, B))
    grads = []
    for memory in ("reversible", "store"):
        m = model(memory=memory, dtype=torch.float64)
        torch.nn.functional.cross_entropy(m(src, m.shifted(tgt)).flatten(0, 1), tgt.flatten()).backward()
        grads.append({k: p.grad for k, p in m.named_parameters()})
    assert_close_all(grads[0], grads[1], 1e-10)


def test_learns_reversal():
    torch.set_num_threads(1)
    t = Trainer(Config(task="reverse", T=10, cell="revgru", hidden=64, steps=300, batch=32, lr=1e-2,
                       eval_every=300, log_every=100, cell_kwargs={"slice_dim": 16}), progress=False)
    t.run()
    assert t.history[-1]["accuracy"] > 0.75, t.history  # chance: 0.1


def test_bad_slice():
    with pytest.raises(ValueError, match="slice_dim must be an int in"):
        model(slice_dim=H + 1)
    with pytest.raises(ValueError, match="mode='full' only"):
        Trainer(Config(task="reverse", mode="tbptt", window=4), progress=False)
