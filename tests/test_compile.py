"""torch.compile(fullgraph=True) of the modules (revrnn/stack_op.py): while compiling, a module's
whole stack is one custom op, so every backend and memory strategy compiles (the compiled
executors and the reversible cells included, which Dynamo cannot trace), the graph does not
grow with T, and the results are the eager module's — checked against the float64 reference,
and bit for bit against eager where both run the same backend."""
from __future__ import annotations

import copy

import pytest
import torch

import revrnn
from revrnn import stack_op
from revrnn.cells import cases
from utils import assert_close_all, grads, packed_grads

HERE = [name for name, why in revrnn.available_backends("cpu").items() if why is None]
I, H, T, B = 5, 12, 6, 3


def compiled(module, fullgraph: bool = True, **kw):
    torch._dynamo.reset()  # each configuration compiles afresh (no recompile limit)
    c = copy.deepcopy(module)
    c.compile(fullgraph=fullgraph, **kw)
    return c


def seeded(module, x, hx=None, seed=5) -> dict:
    """grads(...) from a fixed RNG state: dropout masks drawn alike in every run."""
    torch.manual_seed(seed)
    return grads(module, x, hx)


def same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for _, c in cases(conformance=True)])
def test_every_case_compiles_and_matches_the_float64_reference(case):
    """The default backend here (the compiled executor where it runs the cell), float64."""
    torch.manual_seed(0)
    m = case.make(I, H, dtype=torch.float64)
    ref = case.make(I, H, dtype=torch.float64, backend="reference")
    ref.load_state_dict(m.state_dict())
    x = torch.randn(T, B, I, dtype=torch.float64)
    got = seeded(compiled(m), x)
    same(got, seeded(m, x))
    assert_close_all(got, seeded(ref, x), 1e-9)


@pytest.mark.parametrize("backend", HERE)
@pytest.mark.parametrize("module, kw", [
    ("GRU", {}), ("GRU", dict(memory="recompute", checkpoint_every=2)), ("LSTM", dict(memory="recompute", checkpoint_slots=2)),
    ("RevGRU", {}), ("RevLSTM", dict(memory="store", forget_bits=0))])
def test_every_backend_and_strategy(backend, module, kw):
    cls = getattr(revrnn.nn, module)
    torch.manual_seed(1)
    m = cls(I, H, num_layers=2, backend=backend, **kw)
    x = torch.randn(T, B, I)
    same(seeded(compiled(m), x), seeded(m, x))


def test_packed_bidirectional_batch_first_with_state_and_dropout():
    """PackedSequence input breaks the graph once (Dynamo declines to trace torch's
    pad_packed_sequence, for torch.nn's modules too): compiled without fullgraph."""
    torch.manual_seed(2)
    m = revrnn.nn.LiGRU(I, H, num_layers=2, bidirectional=True, dropout=0.3, recurrent_dropout=0.2)
    x = torch.randn(T, B, I)
    lengths = torch.tensor([T, 2, 5])
    c = compiled(m, fullgraph=False)
    same(packed_grads(c, x, lengths, seed=7), packed_grads(m, x, lengths, seed=7))
    mb = revrnn.nn.LSTM(I, H, batch_first=True)
    xb, hx = torch.randn(B, T, I), (torch.randn(1, B, H), torch.randn(1, B, H))
    same(seeded(compiled(mb), xb, hx), seeded(mb, xb, hx))


def test_the_graph_does_not_grow_with_T():
    graphs = []

    def record(gm, example_inputs):
        graphs.append(len(gm.graph.nodes))
        return gm.forward
    m = revrnn.nn.GRU(I, H, num_layers=2)
    for steps in (4, 64):
        torch._dynamo.reset()
        c = copy.deepcopy(m)
        c.compile(fullgraph=True, backend=record)
        c(torch.randn(steps, B, I))
    assert graphs[0] == graphs[1] and graphs[0] < 60, graphs


def test_graphs_are_freed_and_differentiated_once():
    torch.manual_seed(3)
    c = compiled(revrnn.nn.GRU(I, H))
    x = torch.randn(T, B, I, requires_grad=True)
    before = len(stack_op._GRAPHS)
    out, h = c(x)
    assert len(stack_op._GRAPHS) == before + 1
    del out, h  # dropped without backward: its entry goes with it
    assert len(stack_op._GRAPHS) == before
    out, _ = c(x)
    out.sum().backward(retain_graph=True)
    assert len(stack_op._GRAPHS) == before
    with pytest.raises(RuntimeError, match="can be differentiated once"):
        out.sum().backward()
    with torch.no_grad():  # nothing kept without a graph
        c(x)
    assert len(stack_op._GRAPHS) == before


def test_autocast_keeps_the_traced_dtypes():
    """Under bfloat16 autocast the compiled module hands back what its fake implementation said:
    the input's dtype, with the values of the eager run."""
    torch.manual_seed(4)
    m = revrnn.nn.GRU(I, H)
    x = torch.randn(T, B, I)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, _ = m(x)
        got, h = compiled(m)(x)
    assert got.dtype == h.dtype == torch.float32
    assert torch.equal(got, want.float())


def test_running_statistics_are_updated_as_in_eager():
    """The LiGRU's batch norm updates its running statistics inside the op, on the module's own
    buffers (not op inputs, which an op may not mutate)."""
    torch.manual_seed(6)
    m = revrnn.nn.LiGRU(I, H)
    c = compiled(m)
    x = torch.randn(T, B, I)
    seeded(m, x), seeded(c, x)
    mine = {k.replace("_orig_mod.", ""): v for k, v in c.named_buffers()}
    assert mine.keys() == dict(m.named_buffers()).keys()
    assert all(torch.equal(mine[k], v) for k, v in m.named_buffers())
    assert any(not torch.equal(v, torch.zeros_like(v)) for v in mine.values())
