"""The streamed loss (revrnn.stream_backward) against backpropagation through the whole sequence.

Reference: the same chunks run as one autograd graph, each chunk's end state fed to the next
(``chained``), and, for cells whose forward does not depend on where a call starts, one call on
the whole sequence. A reversible cell with forgetting is the exception: its exact multiplies
draw digits from an information buffer that every call starts empty, so chunked calls follow
another (equally exact) trajectory than one call (specs/reversible.md, "the forward trajectory
depends on the buffer"), and only ``chained`` is its reference. Float64; the two compute the
same operations in the same order but for the chunk-wise summation of the weight gradients, so
1e-10 leaves a wide margin (a wrong chunk boundary or a lost state gradient is O(1)).
"""
from __future__ import annotations

import pytest
import torch

from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import revrnn
from revrnn.cells import cases
from utils import assert_close_all

F64 = torch.float64
T, B, I, H, K = 13, 3, 5, 8, 4  # 4 chunks, the last one short
STRATEGIES = {"store": {}, "recompute": dict(memory="recompute", checkpoint_every=2),
              "revolve": dict(memory="recompute", checkpoint_slots=2), "reversible": dict(memory="reversible")}


def loss_of(head: torch.Tensor, target: torch.Tensor):
    """A per-chunk loss of the chunk's outputs: a linear read-out against targets, squared."""
    def loss_fn(out, t0):
        return ((out @ head - target[t0:t0 + out.shape[0]]) ** 2).sum()
    return loss_fn


def chained(model, x, loss_fn, hx=None, chunk=K):
    """The chunks as one graph: the exact gradient of what stream_backward computes."""
    total, state = 0, hx
    for s in range(0, x.shape[0], chunk):
        out, state = model(x[s:s + chunk], state, t0=s)
        total = total + loss_fn(out, s)
    total.backward()
    return total


def param_grads(model) -> dict[str, torch.Tensor]:
    return {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None}


def configurations():
    out = []
    for _, case in cases(conformance=True):
        module = case.make(I, H, dtype=F64)
        for name in module.memory_modes + (("revolve",) if "recompute" in module.memory_modes else ()):
            out.append(pytest.param(case, name, id=f"{case.name}-{name}"))
    return out


@pytest.mark.parametrize("case, strategy", configurations())
def test_equals_backprop_through_the_sequence(case, strategy):
    torch.manual_seed(0)
    model = case.make(I, H, dtype=F64, num_layers=2, **STRATEGIES[strategy]).train()
    x = torch.randn(T, B, I, dtype=F64)
    loss_fn = loss_of(torch.randn(model.cells[-1].output_size, dtype=F64), torch.randn(T, B, dtype=F64))
    hx = tuple(torch.randn(2, B, size, dtype=F64, requires_grad=True) for size in model.state_sizes)
    hx = hx[0] if len(hx) == 1 else hx
    as_tuple = (lambda h: (h,)) if isinstance(hx, torch.Tensor) else tuple

    torch.manual_seed(1)  # the same random draws (dropout masks) in both runs
    want_loss = chained(model, x, loss_fn, hx)
    want = param_grads(model) | {f"hx{k}": h.grad.clone() for k, h in enumerate(as_tuple(hx))}
    model.zero_grad()
    for h in as_tuple(hx):
        h.grad = None
    torch.manual_seed(1)
    result = revrnn.stream_backward(model, x, loss_fn, hx, chunk=K)
    got = param_grads(model) | {f"hx{k}": h.grad for k, h in enumerate(as_tuple(hx))}
    assert result.chunks == 4
    assert result.loss == pytest.approx(want_loss.item(), rel=1e-12)
    assert_close_all(got, want, 1e-10)
    for k, g in enumerate(as_tuple(result.hx_grad)):
        assert torch.equal(g, got[f"hx{k}"])

    if getattr(model.cells[0], "forget_bits", 0):
        return  # chunked calls follow another trajectory (see the module docstring)
    if not model.cells[0].rowwise_projection:
        return  # batch statistics per chunk
    if "dropout" in str(case.kwargs):
        return  # a per-sequence mask is drawn per chunk
    model.zero_grad()
    out, _ = model(x, hx)
    whole = loss_fn(out, 0)
    whole.backward()
    assert_close_all(param_grads(model), {k: v for k, v in want.items() if not k.startswith("hx")}, 1e-10)


def whole_sequence_configurations():
    """The configurations whose chunked forward is the whole sequence's (see the module docstring)."""
    return [p for p in configurations() if not getattr(p.values[0].make(I, H, dtype=F64).cells[0], "forget_bits", 0)
            and p.values[0].make(I, H, dtype=F64).cells[0].rowwise_projection and "dropout" not in str(p.values[0].kwargs)]


@pytest.mark.parametrize("case, strategy", whole_sequence_configurations())
def test_packed_rows_equal_the_packed_sequence(case, strategy):
    """Rows of different lengths (one ends inside the second chunk, one inside the third; only the
    longest reaches the last chunk) stream as one packed call on the whole sequence: the same
    gradients, initial-state gradients and each row's final state."""
    torch.manual_seed(0)
    model = case.make(I, H, dtype=F64, num_layers=2, **STRATEGIES[strategy]).train()
    lengths = torch.tensor([T, 5, 9])
    x = torch.randn(T, B, I, dtype=F64)
    loss_fn = loss_of(torch.randn(model.cells[-1].output_size, dtype=F64), torch.randn(T, B, dtype=F64))
    hx = tuple(torch.randn(2, B, size, dtype=F64, requires_grad=True) for size in model.state_sizes)
    hx = hx[0] if len(hx) == 1 else hx
    as_tuple = (lambda h: (h,)) if isinstance(hx, torch.Tensor) else tuple

    out, final = model(pack_padded_sequence(x, lengths, enforce_sorted=False), hx)
    out, _ = pad_packed_sequence(out, total_length=T)
    whole = loss_fn(out, 0)
    whole.backward()
    want = param_grads(model) | {f"hx{k}": h.grad.clone() for k, h in enumerate(as_tuple(hx))}
    model.zero_grad()
    for h in as_tuple(hx):
        h.grad = None
    result = revrnn.stream_backward(model, x, loss_fn, hx, chunk=K, lengths=lengths)
    assert result.chunks == 4
    assert result.loss == pytest.approx(whole.item(), rel=1e-12)
    assert_close_all(param_grads(model) | {f"hx{k}": h.grad for k, h in enumerate(as_tuple(hx))}, want, 1e-10)
    assert_close_all({f"h{k}": h for k, h in enumerate(as_tuple(result.state))},
                     {f"h{k}": h.detach() for k, h in enumerate(as_tuple(final))}, 1e-12)


def test_packed_rows_stop_at_the_longest():
    """Steps past the longest row are not run: padding after it costs nothing and changes nothing."""
    torch.manual_seed(0)
    model = revrnn.nn.GRU(I, H, dtype=F64)
    x = torch.randn(T, B, I, dtype=F64)
    seen = []
    result = revrnn.stream_backward(model, x, lambda out, t0: seen.append(out.shape[0]) or out.sum(),
                                    chunk=K, lengths=[6, 2, 7])
    assert result.chunks == 2 and sorted(seen) == [3, 4]  # the loss is applied in the backward pass
    with pytest.raises(ValueError, match=r"lengths must lie in \[1, 13\]"):
        revrnn.stream_backward(model, x, lambda out, t0: out.sum(), lengths=[0, 2, 7])
    with pytest.raises(ValueError, match="lengths has 2 rows, the input 3"):
        revrnn.stream_backward(model, x, lambda out, t0: out.sum(), lengths=[2, 7])
    with pytest.raises(ValueError, match="lengths must be a 1-D tensor or list of ints"):
        revrnn.stream_backward(model, x, lambda out, t0: out.sum(), lengths=[2.0, 7.0, 1.0])


def test_dropout_between_layers_replays():
    """Dropout between layers draws its masks again in the backward pass's re-run: the random
    state is replayed per chunk, so the gradient is the chunked forward's, and afterwards the
    random state is where the forward left it."""
    torch.manual_seed(0)
    model = revrnn.nn.GRU(I, H, num_layers=2, dropout=0.5, dtype=F64).train()
    x = torch.randn(T, B, I, dtype=F64)
    loss_fn = loss_of(torch.randn(H, dtype=F64), torch.randn(T, B, dtype=F64))
    torch.manual_seed(1)
    chained(model, x, loss_fn)
    after = torch.rand(3)
    want = param_grads(model)
    model.zero_grad()
    torch.manual_seed(1)
    revrnn.stream_backward(model, x, loss_fn, chunk=K)
    assert torch.equal(torch.rand(3), after)
    assert_close_all(param_grads(model), want, 1e-10)


def test_buffers_are_updated_once_per_chunk():
    """The backward pass re-runs every chunk; a module's running statistics (the LiGRU's batch
    norm) still see each chunk once, as in the chained forward."""
    torch.manual_seed(0)
    model = revrnn.nn.LiGRU(I, H, dtype=F64).train()
    x = torch.randn(T, B, I, dtype=F64)
    loss_fn = loss_of(torch.randn(H, dtype=F64), torch.randn(T, B, dtype=F64))
    start = {k: b.clone() for k, b in model.named_buffers()}
    chained(model, x, loss_fn)
    want = {k: b.clone() for k, b in model.named_buffers()}
    assert any(not torch.equal(want[k], start[k]) for k in want)
    with torch.no_grad():
        for k, b in model.named_buffers():
            b.copy_(start[k])
    revrnn.stream_backward(model, x, loss_fn, chunk=K)
    for k, b in model.named_buffers():
        assert torch.equal(b, want[k]), k


class Generated:
    """A source that makes its steps on request: step t of row b is a function of (t, b)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.calls = steps, 0

    def __len__(self) -> int:
        return self.steps

    def chunk(self, s: int, e: int) -> torch.Tensor:
        self.calls += 1
        t = torch.arange(s, e, dtype=F64)[:, None, None]
        return torch.sin(t * 0.37 + torch.arange(B, dtype=F64)[:, None] * 1.3 + torch.arange(I, dtype=F64))


def test_source_and_batch_first():
    """A source object gives the same gradient as its tensor, read twice per chunk; a batch-first
    model slices a tensor along its time dimension."""
    torch.manual_seed(0)
    model = revrnn.nn.LSTM(I, H, dtype=F64)
    source = Generated(T)
    x = source.chunk(0, T)
    loss_fn = loss_of(torch.randn(H, dtype=F64), torch.randn(T, B, dtype=F64))
    revrnn.stream_backward(model, x, loss_fn, chunk=K)
    want = param_grads(model)
    model.zero_grad()
    source.calls = 0
    revrnn.stream_backward(model, source, loss_fn, chunk=K)
    assert source.calls == 2 * 4
    assert all(torch.equal(g, want[k]) for k, g in param_grads(model).items())

    first = revrnn.nn.LSTM(I, H, dtype=F64, batch_first=True)
    first.load_state_dict(model.state_dict())
    revrnn.stream_backward(first, x.transpose(0, 1), lambda out, t0: loss_fn(out.transpose(0, 1), t0), chunk=K)
    assert_close_all(param_grads(first), want, 1e-12)


def test_torch_nn_module():
    """A torch.nn module streams too (it is not told t0), and equals its whole-sequence gradient."""
    torch.manual_seed(0)
    model = torch.nn.LSTM(I, H, num_layers=2, dtype=F64)
    x = torch.randn(T, B, I, dtype=F64)
    loss_fn = loss_of(torch.randn(H, dtype=F64), torch.randn(T, B, dtype=F64))
    out, _ = model(x)
    loss_fn(out, 0).backward()
    want = param_grads(model)
    model.zero_grad()
    revrnn.stream_backward(model, x, loss_fn, chunk=K)
    assert_close_all(param_grads(model), want, 1e-10)


def test_final_state_carries():
    """The returned state is the sequence's final state, detached: a next window starts there."""
    model = revrnn.nn.GRU(I, H, dtype=F64)
    x = torch.randn(T, B, I, dtype=F64)
    with torch.no_grad():
        _, want = model(x)
    result = revrnn.stream_backward(model, x, lambda out, t0: out.sum(), chunk=K)
    assert not result.state.requires_grad
    assert_close_all({"h": result.state}, {"h": want}, 1e-12)
    assert result.hx_grad is None


@pytest.mark.parametrize("call, message", [
    (lambda m, x: revrnn.stream_backward(m, x, lambda out, t0: out), "loss_fn must return a scalar tensor"),
    (lambda m, x: revrnn.stream_backward(m, x, lambda out, t0: out.sum(), chunk=0), "chunk must be a positive int"),
    (lambda m, x: revrnn.stream_backward(m, x[:0], lambda out, t0: out.sum()), "at least one step"),
    (lambda m, x: revrnn.stream_backward(m, x[0, 0], lambda out, t0: out.sum()), "with time and batch dimensions"),
    (lambda m, x: revrnn.stream_backward(revrnn.nn.GRU(I, H, bidirectional=True), x, lambda out, t0: out.sum()),
     "needs a unidirectional model"),
])
def test_bad_arguments(call, message):
    model = revrnn.nn.GRU(I, H)
    with pytest.raises(ValueError, match=message):
        call(model, torch.randn(T, B, I))
