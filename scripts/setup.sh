#!/usr/bin/env bash
# Set up .venv for revrnn: a virtual environment, torch if none is importable, and revrnn
# installed editable with its test dependencies. Idempotent; run from anywhere.
#
# The venv sees the system's site-packages only where the system Python has a CUDA build of torch
# (a GPU machine's own torch is used). Anywhere else it is isolated: a package that the system
# happens to have cannot hide one that the project forgot to declare.
#
#   REVRNN_SYSTEM_SITE  1 or 0 overrides that choice
#   TORCH_SPEC       torch requirement installed when no torch is importable (torch==2.13.0)
#   TORCH_INDEX_URL  index for that install; by default the configured one, or PyTorch's CPU
#                    index when that would pull CUDA wheels onto a machine without a GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

if [ ! -x .venv/bin/python ]; then
    site=${REVRNN_SYSTEM_SITE:-}
    if [ -z "$site" ]; then
        site=0
        "$PY" -c "import sys, torch; sys.exit(torch.version.cuda is None)" 2>/dev/null && site=1
    fi
    if [ "$site" = 1 ]; then "$PY" -m venv --system-site-packages .venv; else "$PY" -m venv .venv; fi
fi
pip() { .venv/bin/python -m pip "$@"; }

if ! .venv/bin/python -c "import torch" 2>/dev/null; then
    args=()
    if [ -n "${TORCH_INDEX_URL:-}" ]; then
        args=(--index-url "$TORCH_INDEX_URL")
    elif ! command -v nvidia-smi >/dev/null && \
         pip install --dry-run --quiet --report - "$TORCH_SPEC" | grep -q '"name": "nvidia-'; then
        echo "setup: no GPU here and the configured index offers CUDA builds of torch; using the CPU build" >&2
        args=(--index-url https://download.pytorch.org/whl/cpu)
    fi
    pip install "${args[@]}" "$TORCH_SPEC"
fi
pip install --quiet -e ".[test]"
.venv/bin/python -c "import revrnn, torch; print('setup: revrnn', revrnn.__version__, 'torch', torch.__version__,
'backends', {k: v is None for k, v in revrnn.available_backends().items()})"
