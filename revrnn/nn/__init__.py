"""torch.nn-style recurrent modules backed by the revrnn engine."""
from .base import RecurrentBase
from .gru import GRU
from .libru import LiBRU
from .ligru import LiGRU
from .lstm import LSTM
from .mgu import MGU

__all__ = ["RecurrentBase", "LSTM", "GRU", "MGU", "LiGRU", "LiBRU"]
