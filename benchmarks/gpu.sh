#!/usr/bin/env bash
# One unattended benchmark run on one GPU, at most 8 minutes: the paper-size teachers, SlowFast
# R50 training (synthetic input and real decoding), the share of the bf16 peak and projected
# GPU-hours, written to benchmarks/results/<machine>-<date>.json (rows as `make bench` writes).
#
#   bash benchmarks/gpu.sh                          # device cuda, batch 32
#   bash benchmarks/gpu.sh --batch 64 --compile     # options: see benchmarks/gpu.py
#   bash benchmarks/gpu.sh --device cpu --quick     # tiny sizes on a CPU (what the tests run)
#
# PYTHON picks the interpreter (default: the repository's .venv). The run stops itself after
# --budget-s (default 420 s) between measurements; `timeout` ends it at 8 minutes regardless,
# and the rows measured by then are already in the results file.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
exec timeout --signal=INT --kill-after=10 480 "$PY" -m benchmarks.gpu "$@"
