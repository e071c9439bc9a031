#!/usr/bin/env bash
# Create .venv and install the project with its dev and demo extras.
# The CPU build of torch is installed first so that the project's torch range
# is already satisfied and pip never pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    $PIP install -q torch==2.13.0 2> >(grep -v "is ignored: it is neither" >&2)
fi
$PIP install -q -e ".[dev,demos]" 2> >(grep -v "is ignored: it is neither" >&2)
