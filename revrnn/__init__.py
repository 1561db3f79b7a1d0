"""revrnn: memory-efficient training of gated and reversible recurrent networks."""
from . import backends, cells, init, nn
from .backends import BackendUnavailable, available_backends
from .stream import StreamResult, TensorSource, stream_backward

__version__ = "0.1.0"
__all__ = ["nn", "init", "cells", "backends", "BackendUnavailable", "available_backends", "stream_backward",
           "StreamResult", "TensorSource", "__version__"]
