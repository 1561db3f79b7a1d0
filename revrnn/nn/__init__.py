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

#: the modules that build from (input_size, hidden_size) alone, by command-line name
MODULES = {
    "lstm": LSTM, "gru": GRU, "mgu": MGU, "ligru": LiGRU, "libru": LiBRU,
    "kaflstm": KAFLSTM, "kafgru": KAFGRU, "revgru": RevGRU, "revlstm": RevLSTM,
}

__all__ = ["MODULES", "RecurrentBase", "LSTM", "GRU", "MGU", "LiGRU", "LiBRU", "NRU", "GLSTM", "KAFLSTM", "KAFGRU", "RevGRU", "RevLSTM"]
