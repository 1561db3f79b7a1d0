import importlib.util
import os

import pytest
import torch

# Without a GPU the Triton kernels run on CPU tensors in Triton's interpreter, which must be
# switched on before any kernel is defined (i.e. before revrnn.kernels is imported).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

HAS_TRITON = importlib.util.find_spec("triton") is not None


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same random state, so a failure reproduces."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests run tiny problems: one thread is several times faster than two on a
    shared 2-core machine (thread start-up dominates)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True, scope="session")
def _poison_outputs():
    """Kernel outputs start as NaN (integers as a sentinel), so an element a kernel fails to
    write cannot pass a comparison by luck."""
    if not HAS_TRITON:
        yield
        return
    from revrnn.kernels import common
    common.POISON = True
    yield
    common.POISON = False


@pytest.fixture
def poison():
    """Fill every newly allocated tensor with NaN, so that an output element the C++ code fails
    to write shows up as NaN in the comparison (torch.empty returns NaN in deterministic mode)."""
    before = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    assert torch.empty(8, dtype=torch.float64).isnan().all()  # the poisoning itself works
    yield
    torch.use_deterministic_algorithms(before[0])
    torch.utils.deterministic.fill_uninitialized_memory = before[1]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def free_blocks(monkeypatch):
    """The g-LSTM's gated projection with no cost per block: it takes its blocked path at the
    tests' small sizes too."""
    from revrnn.cells.glstm import sparse
    monkeypatch.setattr(sparse, "BLOCK_COST", {"cpu": 0, "cuda": 0})


@pytest.fixture
def glstm_sparse(free_blocks):
    """``glstm_sparse(name)``: backend ``name`` (on CPU tensors), whose g-LSTM sparse-path setting
    the test may change; it gets its setting back afterwards. The sparse path projects gated at
    any size (``free_blocks``)."""
    from revrnn.backends import get_backend
    saved = []

    def get(name):
        backend = get_backend(name, torch.device("cpu"))
        saved.append((backend, backend.glstm_sparse))
        return backend
    yield get
    for backend, setting in saved:
        backend.glstm_sparse = setting
