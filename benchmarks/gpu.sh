#!/usr/bin/env bash
# Every benchmark's GPU section in one run, printed as one Markdown table (benchmarks/gpu_suite.py): the grounding
# engine on LLaVA-1.5-7B's and Qwen2-VL-7B's shapes in bf16 at their real depth, ours against the reference path,
# and SAM vit_h's embedding and decodes; a few minutes on one H200. Without CUDA it says "no GPU" and exits 0.
#   bash benchmarks/gpu.sh            # on the GPU machine
#   bash benchmarks/gpu.sh --dry-run  # every section at tiny sizes on the CPU (what the tests run)
# PYTHON: the interpreter (default: the repository's .venv, else python3).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=${PYTHON:-.venv/bin/python}
if [[ ! -x $python ]]; then
    python=python3
fi
exec "$python" benchmarks/gpu_suite.py "$@"
