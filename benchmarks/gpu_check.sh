#!/usr/bin/env bash
# GPU figures for BUILD_NOTES.md, in under 10 minutes, on a machine with an NVIDIA GPU
# and this project installed with its GPU extra (python3 -m venv .venv && .venv/bin/pip install -e '.[gpu]').
#
#   OUT=gpu_out bash benchmarks/gpu_check.sh
#
# Runs benchmarks/model_bench.py for the cpu and paper presets in float32 and bfloat16 (its default
# --precisions) and in float16 (--mixed_precision), each with XLA off and on, and writes OUT/devices.txt, OUT/model_bench.jsonl (one JSON line per
# preset and setting) and OUT/log.txt. For scale: the paper trained at about 24 blocks/s on
# two RTX 2080 Ti; one current GPU should train the paper preset at 100x that or more.
# SMOKE=1: one tiny run (smoke preset, batch 1, no timing loop, XLA and float16 off) on any device,
# CPU included: the test suite's run (tests/test_benchmarks.py).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/gpu_out}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
: > "$OUT/model_bench.jsonl"
"$PY" -c "import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices('GPU'))" | tee "$OUT/devices.txt"
if [ "${SMOKE:-0}" = 1 ]; then
  SETTINGS=(false) ARGS=(--presets smoke --seconds 0 --batch 1 --matmul 256 --conv 1 --conv_edge 8)
else
  SETTINGS=(false true) ARGS=(--presets cpu,paper --seconds 5)
  if ! grep -q "GPU" "$OUT/devices.txt"; then
    echo "no GPU visible to TensorFlow; see $OUT/devices.txt" >&2
    exit 1
  fi
fi
for mixed in "${SETTINGS[@]}"; do
  for xla in "${SETTINGS[@]}"; do
    timeout 150 "$PY" benchmarks/model_bench.py "${ARGS[@]}" \
      --mixed_precision="$mixed" --jit_compile="$xla" --output "$OUT/model_bench.jsonl" 2>&1 \
      | grep -v -E "^(I|W)0000" | tee -a "$OUT/log.txt" || echo "run mixed=$mixed xla=$xla failed or timed out" | tee -a "$OUT/log.txt"
  done
done
echo "figures in $OUT/model_bench.jsonl"
