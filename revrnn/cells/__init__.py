"""Cell specs: one file per cell family, each the single definition of its cells."""
from .base import CellSpec, ParamSpec
from .gru import GRUCell
from .lstm import LSTMCell

__all__ = ["CellSpec", "ParamSpec", "LSTMCell", "GRUCell"]
