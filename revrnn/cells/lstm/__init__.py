"""The LSTM family: torch.nn.LSTM, with ``proj_size``. Spec :mod:`.spec`; Triton glue :mod:`.triton`
(kernels ``revrnn.kernels.lstm``, ``persistent``); compiled-executor glue :mod:`.cpu`."""
from ..family import Case, Family
from .spec import LSTMCell, chrono_log_uniform

FAMILY = Family(
    name="lstm", package=__name__, cells=(LSTMCell,), modules={"lstm": "LSTM"}, backends=("triton", "executor"),
    cases=(
        Case("lstm", "LSTM", low_precision=True, gradcheck={}, compile="every", baseline="LSTM"),
        Case("lstm-nobias", "LSTM", dict(bias=False)),
        Case("lstm-proj", "LSTM", dict(proj_size=4), low_precision=True, gradcheck=dict(proj_size=1), compile="every"),
        Case("lstm-proj-quarter", "LSTM", scaled=dict(proj_size=0.25), conformance=False, bench="LSTM proj_size=H/4",
             baseline="LSTM"),
        # the persistent whole-chunk kernels (no float64), by tile width: 16 and 128 (8 warps); 45 with --full
        *(Case(f"persistent-lstm-h{h}", "LSTM", hidden=h, conformance=False, compile="low", full=h == 45,
               triton=dict(persistent="always")) for h in (5, 45, 128)),
    ))
