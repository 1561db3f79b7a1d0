"""Cell specs: one file per cell family, each the single definition of its cells."""
from .base import CellSpec, ParamSpec
from .gru import GRUCell
from .libru import LiBRUCell
from .ligru import LightCell, LiGRUCell
from .lstm import LSTMCell
from .mgu import MGUCell

__all__ = ["CellSpec", "ParamSpec", "LSTMCell", "GRUCell", "MGUCell", "LightCell", "LiGRUCell", "LiBRUCell"]
