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
