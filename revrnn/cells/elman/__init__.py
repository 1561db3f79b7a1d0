"""The Elman RNN (torch.nn.RNN, tanh or ReLU): spec :mod:`.spec`. It has no kernels yet, so every
backend but the reference falls back (``auto``) or refuses it (named)."""
from ..family import Case, Family
from .spec import ElmanCell, check_nonlinearity

FAMILY = Family(
    name="elman", package=__name__, cells=(ElmanCell,), modules={"elman": "RNN"},
    cases=(
        Case("rnn-tanh", "RNN"),
        Case("rnn-relu-nobias", "RNN", dict(nonlinearity="relu", bias=False)),
    ))
