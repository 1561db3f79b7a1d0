"""The exactly reversible cells RevGRU and RevLSTM (MacKay et al. 2018): the integer core
(:mod:`.fixed`), the information buffer (:mod:`.buffer`), the cell specs (:mod:`.base`,
:mod:`.revgru`, :mod:`.revlstm`), the reversible autograd Function (:mod:`.function`), and the
half-updates each backend runs: torch ops (:mod:`.reference`), fused Triton kernels
(:mod:`.triton`) or the compiled executor's whole-chunk loop (:mod:`.cpu`)."""
from ..family import Case, Family
from .buffer import InformationBuffer
from .function import BufferStats
from .revgru import RevGRUCell
from .revlstm import RevLSTMCell

FAMILY = Family(
    name="reversible", package=__name__, cells=(RevGRUCell, RevLSTMCell),
    modules={"revgru": "RevGRU", "revlstm": "RevLSTM"}, backends=("reference", "triton", "executor"),
    reversible_of={"gru": "revgru", "lstm": "revlstm", "revgru": "revgru", "revlstm": "revlstm"},
    cases=tuple(Case(f"{name.lower()}-k{bits}", name, dict(forget_bits=bits, verify=False), hidden=22, compile="float",
                     full=bits in (1, 10), bench=name if bits == 3 else None, conformance=bits in (0, 3))
                for name in ("RevGRU", "RevLSTM") for bits in (0, 1, 3, 10)))

__all__ = ["InformationBuffer", "BufferStats", "RevGRUCell", "RevLSTMCell", "FAMILY"]
