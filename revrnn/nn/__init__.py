"""torch.nn-style recurrent modules backed by the revrnn engine."""
from .base import RecurrentBase
from .gru import GRU
from .lstm import LSTM

__all__ = ["RecurrentBase", "LSTM", "GRU"]
