"""The GRU family: torch.nn.GRU (reset-after), reset-before (Cho v3) and the gate variants
GRU1–3. Spec :mod:`.spec`; Triton glue :mod:`.triton` (kernels ``revrnn.kernels.gru``,
``persistent``); compiled-executor glue :mod:`.cpu` (torch.nn's GRU)."""
from ..family import Case, Family
from .spec import GATE_TERMS, GRUCell, check_variant

_LOW, _GRADCHECK = {"gru0-after", "gru1-before"}, {"gru1-after", "gru2-before"}
FAMILY = Family(
    name="gru", package=__name__, cells=(GRUCell,), modules={"gru": "GRU"}, backends=("triton", "executor"),
    cases=(
        *(Case(f"gru{v}-{'after' if ra else 'before'}", "GRU", dict(variant=v, reset_after=ra),
               low_precision=f"gru{v}-{'after' if ra else 'before'}" in _LOW,
               gradcheck={} if f"gru{v}-{'after' if ra else 'before'}" in _GRADCHECK else None,
               compile="every" if v == 0 else "some", bench="GRU variant=1" if (v, ra) == (1, True) else None)
          for v in range(4) for ra in (True, False)),
        Case("gru0-nobias", "GRU", dict(bias=False), compile="some"),
        Case("gru", "GRU", conformance=False, baseline="GRU"),  # gru0-after in torch.nn's words
        *(Case(f"persistent-gru-h{h}", "GRU", hidden=h, conformance=False, compile="low", full=h == 45,
               triton=dict(persistent="always")) for h in (5, 45, 128)),
        *(Case(f"persistent-gru-nobias-h{h}", "GRU", dict(bias=False), hidden=h, conformance=False,
               compile="low" if h != 5 else "some", full=h != 5, triton=dict(persistent="always"))
          for h in (5, 45, 128)),
    ))
