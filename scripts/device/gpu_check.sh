#!/usr/bin/env bash
# One call on the H100 machine: CUDA op parity, whole-model CPU-vs-CUDA check on the tiny
# model, and `gptoss bench` on a full-size gpt-oss-20b-shaped random GGUF.
# Expects the stripped binaries (xz-compressed) in .carry/: gptoss.xz, cuda_smoke.xz.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTOSS_CACHE=/tmp/gc
B=/tmp/bin; mkdir -p $B
for f in .carry/*.xz; do xz -dc "$f" > $B/$(basename "$f" .xz); chmod +x $B/$(basename "$f" .xz); done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== cuda_smoke (every CUDA op vs a CPU loop)"
$B/cuda_smoke 2>&1 | tail -15
echo "== compare-devices (tiny model, CUDA vs CPU)"
$B/gptoss compare-devices --model tiny --device cuda --steps 64 2>&1 | tail -3
if [ "${SKIP_20B:-0}" != 1 ]; then
  echo "== generate 20b-shaped model"
  ( time $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf ) 2>&1 | tail -4
  ls -la /tmp/20b.gguf
  for mode in "" "--quantized-dense"; do
    echo "== bench 20b $mode"
    $B/gptoss bench --model /tmp/20b.gguf --device cuda --prompt-tokens 512 --gen-tokens 64 --reps 2 $mode --json 2>&1 | tail -3
    nvidia-smi --query-gpu=memory.used --format=csv,noheader
  done
fi
