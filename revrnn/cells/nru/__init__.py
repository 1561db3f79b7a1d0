"""The non-saturating recurrent unit: spec :mod:`.spec`; what its runners share :mod:`.chunk`;
Triton glue :mod:`.triton` (kernels ``revrnn.kernels.nru``); compiled-executor glue :mod:`.cpu`
(loop ``csrc/include/revrnn/nru.h``)."""
from ..family import Case, Family
from .spec import L5_EPS, NRUCell, check_heads, l5_heads

FAMILY = Family(
    name="nru", package=__name__, cells=(NRUCell,), modules={"nru": "NRU"}, backends=("triton", "executor"),
    cases=(
        # geometries (memory size M, heads k), φ = ReLU and the memory clamp
        Case("nru-m8k2", "NRU", dict(memory_size=8, num_heads=2), hidden=7, compile="every"),
        Case("nru-m9k4-relu-clamp", "NRU", dict(memory_size=9, num_heads=4, use_relu=True, memory_clamp=2.5),
             hidden=7, compile="every"),
        Case("nru-m4k1-clamp", "NRU", dict(memory_size=4, num_heads=1, memory_clamp=0.2), hidden=7, compile="some"),
        Case("nru-m2k8-relu-clamp", "NRU", dict(memory_size=2, num_heads=8, use_relu=True, memory_clamp=0.1),
             hidden=7, conformance=False, compile="every", full=True),
        Case("nru-m12k3-nobias", "NRU", dict(memory_size=12, num_heads=3, bias=False), hidden=7, conformance=False,
             compile="every", full=True),
        Case("nru", "NRU", conformance=False, bench="NRU"),
    ))
