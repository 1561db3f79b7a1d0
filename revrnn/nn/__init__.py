"""torch.nn-style recurrent modules backed by the revrnn engine."""
from ..cells import FAMILIES
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
from .rnn import RNN

#: the modules that build from (input_size, hidden_size) alone, by command-line name (from the
#: catalog, :data:`revrnn.cells.FAMILIES`)
MODULES = {cli: globals()[name] for family in FAMILIES for cli, name in family.modules.items()}
#: the modules that also take the sequence length their time gates spread over (``t_max``)
TIMED_MODULES = {cli: globals()[name] for family in FAMILIES for cli, name in family.timed_modules.items()}

__all__ = ["MODULES", "TIMED_MODULES", "RecurrentBase", "LSTM", "GRU", "MGU", "LiGRU", "LiBRU", "NRU", "GLSTM", "KAFLSTM", "KAFGRU",
           "RevGRU", "RevLSTM", "RNN"]
