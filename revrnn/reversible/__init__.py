"""Exactly reversible cells: the integer core (:mod:`.fixed`), the information buffer
(:mod:`.buffer`), the RevGRU/RevLSTM cell specs and the reversible autograd Function."""
from .buffer import InformationBuffer
from .function import BufferStats
from .revgru import RevGRUCell
from .revlstm import RevLSTMCell

__all__ = ["InformationBuffer", "BufferStats", "RevGRUCell", "RevLSTMCell"]
