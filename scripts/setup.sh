#!/usr/bin/env bash
# Create the virtualenv and install netdiffusion with pinned dependencies.
# torch is pinned to 2.13.0 (a CPU build is on local disk; an unpinned torch pulls a CUDA build).
set -euo pipefail
PY="${1:-python3.11}"
VENV="${2:-.venv}"
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "setup: $PY not found; install Python 3.11" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip setuptools wheel
"$VENV/bin/pip" install -q -c constraints.txt "torch==2.13.0"
"$VENV/bin/pip" install -q -c constraints.txt -e '.[dev]'
echo "setup: $VENV ready ($("$VENV/bin/python" -c 'import torch; print("torch", torch.__version__)'))"
