#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): under 8 minutes on one GPU; on a CPU (CI) its GPU parts are
# skipped, said so, and their CPU smoke versions run. Usage: bash benchmarks/gpu_check.sh [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" benchmarks/gpu_check.py "$@"
