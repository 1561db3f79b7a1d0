"""LSTM and GRU with kernel-activation-function gates: spec :mod:`.spec`; Triton glue
:mod:`.triton` (the LSTM and reset-after GRU runners with the KAF operands; kernels
``revrnn.kernels.kaf``)."""
from ..family import Case, Family
from .spec import KAFGates, KAFGRUCell, KAFLSTMCell, kaf, kaf_gamma, kaf_gate, krr_alpha

FAMILY = Family(
    name="kaf", package=__name__, cells=(KAFLSTMCell, KAFGRUCell), modules={"kaflstm": "KAFLSTM", "kafgru": "KAFGRU"},
    backends=("triton", "executor"),
    cases=(
        Case("kaflstm", "KAFLSTM", low_precision=True, gradcheck=dict(kaf_size=2), compile="every", bench="KAFLSTM"),
        Case("kafgru", "KAFGRU", dict(kaf_size=7), low_precision=True, gradcheck=dict(kaf_size=2), compile="every"),
        Case("kafgru-nobias", "KAFGRU", dict(bias=False), compile="some"),
        Case("kafgru-d20", "KAFGRU", conformance=False, bench="KAFGRU"),
    ))
