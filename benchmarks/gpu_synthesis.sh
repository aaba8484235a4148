#!/usr/bin/env bash
# GPU figures for the synthesis cascade (issue 8), in a few minutes, on a machine with an NVIDIA
# GPU and this project installed with its GPU extra (python3 -m venv .venv && .venv/bin/pip install -e '.[gpu]').
#
#   OUT=gpu_out bash benchmarks/gpu_synthesis.sh
#
# Runs benchmarks/synthesis_bench.py with the paper preset (3 levels, 512 x 512) for 128 and 256
# slices, mixed precision off, and writes OUT/synthesis_bench.jsonl: seconds per volume, blocks/s
# against the finest stage's pure block throughput, peak host RSS growth and TensorFlow's peak GPU
# memory. Goal: under 8 GB of GPU memory for 512 x 512 x 256 (MAISI: 14 GB for 256 x 256 x 128,
# 55 GB for 512 x 512 x 768 on an A100).
# SMOKE=1: one tiny run (a one-level smoke cascade, 16 x 16 x 8) on any device, CPU included: the test suite's
# run (tests/test_benchmarks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu_out}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
: > "$OUT/synthesis_bench.jsonl"
"$PY" -c "import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices('GPU'))" | tee "$OUT/devices.txt"
if [ "${SMOKE:-0}" = 1 ]; then
  ARGS=(--preset smoke --levels 1 --size 16 --slices 8 --batch 4)
else
  ARGS=(--preset paper --slices 128,256 --batch 32)
  if ! grep -q "GPU" "$OUT/devices.txt"; then
    echo "no GPU visible to TensorFlow; see $OUT/devices.txt" >&2
    exit 1
  fi
fi
# memory grows on demand, so TensorFlow's peak is what the cascade needs, not a preallocated pool
export TF_FORCE_GPU_ALLOW_GROWTH=true
timeout 500 "$PY" benchmarks/synthesis_bench.py "${ARGS[@]}" \
  --output "$OUT/synthesis_bench.jsonl" 2>&1 | grep -v -E "^(I|W)0000" | tee "$OUT/log.txt"
echo "figures in $OUT/synthesis_bench.jsonl"
