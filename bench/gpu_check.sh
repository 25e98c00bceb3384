#!/usr/bin/env bash
# One short, prepared GPU check: on a machine with a CUDA GPU, train the default model for a few
# steps with the GPU profile (axolotl_configs/gpu.yaml) through tunegate's own launch, and print
# tokens/s and peak GPU memory. Exits 2 where there is no GPU. Arguments go to bench/gpu_check.py:
#   bench/gpu_check.sh [--steps 30] [--processes N]
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no NVIDIA GPU here (nvidia-smi missing or failing): nothing to measure" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
make python-deps >/dev/null
exec .venv/bin/python bench/gpu_check.py "$@"
