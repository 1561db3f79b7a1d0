"""The light cells: LiGRU (batch-normalised projections, ReLU candidate, recurrent dropout) and
LiBRU (both forms). Specs :mod:`.ligru`, :mod:`.libru`; Triton glue :mod:`.triton` (kernels
``revrnn.kernels.light``); compiled-executor glue :mod:`.cpu` (LiGRU)."""
from ..family import Case, Family
from .libru import FORMS, LiBRUCell, check_form, log_eps, safe_log
from .ligru import BN_EPS, BN_MOMENTUM, LightCell, LiGRUCell, check_recurrent_dropout, masked_batch_norm

FAMILY = Family(
    name="light", package=__name__, cells=(LiGRUCell, LiBRUCell), modules={"ligru": "LiGRU", "libru": "LiBRU"},
    backends=("triton", "executor"),
    cases=(
        Case("ligru-dropout", "LiGRU", dict(recurrent_dropout=0.25), compile="every"),
        Case("ligru-nobn", "LiGRU", dict(batch_norm=False), low_precision=True, gradcheck={}, compile="every",
             bench="LiGRU (no BN)"),
        Case("libru-probs", "LiBRU", low_precision=True, gradcheck={}, compile="every", bench="LiBRU"),
        Case("libru-logprobs", "LiBRU", dict(form="logprobs", batch_norm=False), low_precision=True, gradcheck={},
             compile="every"),
    ))
