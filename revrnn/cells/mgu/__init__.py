"""The minimal gated unit and its variants MGU1–3: spec :mod:`.spec`; Triton glue :mod:`.triton`
(the reset-before GRU runner with one gate); compiled-executor glue :mod:`.cpu` (variant 0)."""
from ..family import Case, Family
from .spec import MGUCell

FAMILY = Family(
    name="mgu", package=__name__, cells=(MGUCell,), modules={"mgu": "MGU"}, backends=("triton", "executor"),
    cases=(
        *(Case(f"mgu{v}", "MGU", dict(variant=v), low_precision=v == 0, gradcheck={} if v == 0 else None,
               compile="every" if v == 0 else "some", bench="MGU" if v == 0 else None) for v in range(4)),
        Case("mgu1-nobias", "MGU", dict(variant=1, bias=False)),
    ))
