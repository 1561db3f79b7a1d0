"""torch.nn-style recurrent modules backed by the revrnn engine."""
from .base import RecurrentBase
from .glstm import GLSTM
from .gru import GRU
from .kaf import KAFGRU, KAFLSTM
from .libru import LiBRU
from .ligru import LiGRU
from .lstm import LSTM
from .mgu import MGU
from .nru import NRU
from .revgru import RevGRU
from .revlstm import RevLSTM

__all__ = ["RecurrentBase", "LSTM", "GRU", "MGU", "LiGRU", "LiBRU", "NRU", "GLSTM", "KAFLSTM", "KAFGRU", "RevGRU", "RevLSTM"]
