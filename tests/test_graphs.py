"""The CUDA-graph path of the GPU backends (revrnn/backends/graphs.py), its logic on CPU: a
stand-in "capture" that records the call on its static inputs and "replays" it by running it
again, on the compiled CPU backend. What a real capture adds (the CUDA stream capture itself) is
tested on a GPU (tests/test_cuda_backend.py::test_gpu_graphs)."""
from __future__ import annotations

import pytest
import torch

import revrnn
from revrnn.backends import get_backend
from revrnn.backends.graphs import Graphs
from utils import grads

REASON = revrnn.available_backends()["cpu"]
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"backend 'cpu' unavailable: {REASON}")


class Replay:
    """Stands in for CudaCapture: runs the call once (the capture), then again per replay."""

    made = 0

    def __init__(self, fn, device):
        Replay.made += 1
        self.fn, self.out = fn, fn()

    def replay(self):
        self.out = self.fn()
        return self.out


class Refuse:
    def __init__(self, fn, device):
        raise RuntimeError("operation not permitted when stream is capturing")


@pytest.fixture
def graphed(monkeypatch):
    """The cpu backend with graphs on, through ``capture``."""
    backend = get_backend("cpu", torch.device("cpu"))

    def on(capture):
        monkeypatch.setattr(backend, "offers_graphs", True)
        monkeypatch.setattr(backend, "_graphs", Graphs(capture, devices=("cpu",)))
        backend.graphs = True
        return backend
    yield on
    backend._graphs_on = False


@pytest.mark.parametrize("memory", ["store", "recompute"])
def test_replays_give_the_eager_results_for_new_inputs(graphed, memory):
    torch.manual_seed(0)
    m = revrnn.nn.GRU(5, 16, num_layers=2, backend="cpu", memory=memory, checkpoint_every=4, dtype=torch.float64)
    xs = [torch.randn(12, 3, 5, dtype=torch.float64) for _ in range(2)]
    want = [grads(m, x) for x in xs]
    backend = graphed(Replay)
    Replay.made = 0
    got = [grads(m, x) for x in xs]
    made = Replay.made
    assert made > 0
    again = grads(m, xs[0])  # every key is known by now: replays only
    assert Replay.made == made
    for g, w in zip([*got, again], [*want, want[0]]):
        assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in w), "a replay gave another result"
    assert not backend._graphs.refused


def test_outputs_are_copies_that_later_replays_leave_alone(graphed):
    torch.manual_seed(1)
    m = revrnn.nn.LSTM(4, 8, backend="cpu")
    graphed(Replay)
    x1, x2 = torch.randn(6, 2, 4), torch.randn(6, 2, 4)
    with torch.no_grad():
        y1, _ = m(x1)
        kept = y1.clone()
        m(x2)
    assert torch.equal(y1, kept)


def test_weight_updates_reach_the_graph(graphed):
    torch.manual_seed(2)
    m = revrnn.nn.GRU(4, 8, backend="cpu")
    graphed(Replay)
    x = torch.randn(5, 2, 4)
    with torch.no_grad():
        before = m(x)[0]
        m.weight_hh_l0.mul_(0.5)
        after = m(x)[0]
    graphed_after = after.clone()
    m.backend = "reference"
    with torch.no_grad():
        assert not torch.allclose(before, graphed_after)
        torch.testing.assert_close(graphed_after, m(x)[0], rtol=1e-5, atol=1e-6)


def test_time_gated_cells_get_a_graph_per_first_step(graphed, glstm_sparse):
    torch.manual_seed(3)
    m = revrnn.nn.GLSTM(4, 8, t_max=40.0, backend="cpu", memory="recompute", checkpoint_every=5,
                        dtype=torch.float64)
    x = torch.randn(20, 2, 4, dtype=torch.float64)
    glstm_sparse("cpu").glstm_sparse = "never"  # the sparse path reads counts on the host: not capturable
    want = grads(m, x)
    backend = graphed(Replay)
    got = grads(m, x)
    assert all(torch.equal(got[k], want[k]) for k in want)
    starts = {key[2] for key in backend._graphs.graphs}
    assert starts == {0, 5, 10, 15}


def test_a_chunk_that_cannot_be_captured_runs_eagerly(graphed):
    torch.manual_seed(4)
    m = revrnn.nn.GRU(4, 8, backend="cpu", dtype=torch.float64)
    x = torch.randn(5, 2, 4, dtype=torch.float64)
    want = grads(m, x)
    backend = graphed(Refuse)
    got = grads(m, x)
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert backend._graphs.refused and all("capturing" in why for why in backend._graphs.refused.values())


def test_only_the_gpu_backends_offer_graphs():
    with pytest.raises(ValueError, match="backend 'cpu' does not offer CUDA graphs"):
        get_backend("cpu", torch.device("cpu")).graphs = True
