"""The Elman RNN (torch.nn.RNN, tanh or ReLU): spec :mod:`.spec`; compiled-executor glue :mod:`.cpu`.
It has no Triton kernels yet, so on a GPU ``auto`` falls back to the reference and ``triton``
refuses it (named)."""
from ..family import Case, Family
from .spec import ElmanCell, check_nonlinearity

FAMILY = Family(
    name="elman", package=__name__, cells=(ElmanCell,), modules={"elman": "RNN"}, backends=("executor",),
    cases=(
        Case("rnn-tanh", "RNN"),
        Case("rnn-relu-nobias", "RNN", dict(nonlinearity="relu", bias=False)),
    ))
