"""Cell specs: one file per cell family, each the single definition of its cells."""
from .base import CellSpec, ParamSpec
from .glstm import GLSTMCell
from .gru import GRUCell
from .kaf import KAFGRUCell, KAFLSTMCell
from .libru import LiBRUCell
from .ligru import LightCell, LiGRUCell
from .lstm import LSTMCell
from .mgu import MGUCell
from .nru import NRUCell

__all__ = ["CellSpec", "ParamSpec", "LSTMCell", "GRUCell", "MGUCell", "LightCell", "LiGRUCell", "LiBRUCell",
           "NRUCell", "GLSTMCell", "KAFLSTMCell", "KAFGRUCell"]
