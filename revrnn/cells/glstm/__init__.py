"""The Gaussian-gated LSTM: spec :mod:`.spec`; Triton glue :mod:`.triton` (dense through the LSTM
runner with the time gate, and the sparse open-unit path); its benchmark group :mod:`.bench`."""
from ..family import Case, Family
from .spec import SIGMA_MIN, GLSTMCell

_GATE = dict(t_max=12.0, sigma_fraction=0.2)
FAMILY = Family(
    name="glstm", package=__name__, cells=(GLSTMCell,), backends=("triton", "executor"), bench_groups=("sparse",),
    timed_modules={"glstm": "GLSTM"},
    cases=(
        Case("glstm", "GLSTM", _GATE, low_precision=True, gradcheck={}),
        Case("glstm-dense", "GLSTM", _GATE, conformance=False, compile="every", triton=dict(glstm_sparse="never")),
        Case("glstm-sparse", "GLSTM", _GATE, conformance=False, compile="every", triton=dict(glstm_sparse="always")),
        Case("glstm-t1000", "GLSTM", dict(t_max=1000.0), conformance=False, bench="GLSTM t_max=1000"),
    ))
