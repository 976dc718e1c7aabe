#!/bin/sh
# The GPU check in one command, for a fresh GPU machine (docs/benchmarks.md, "GPU check"):
#   benchmarks/gpu_check.sh                 # every stage, at most 8 minutes
#   benchmarks/gpu_check.sh --rehearsal     # the same stages on the CPU at tiny sizes
# The check itself needs only Python 3.11's standard library: its first stage builds .venv with
# make, and the later stages run in that .venv.
set -e
cd "$(dirname "$0")/.."
PYTHON=$(command -v python3.11 || command -v python3)
exec "$PYTHON" benchmarks/gpu_check.py "$@"
