#!/usr/bin/env bash
# Checks and times the tensor-core prefill in one call of the device tool. Carry in .carry/:
# gptoss.xz, cuda_prefill.xz, cuda_smoke.xz, cuda_decode.xz (from `cargo xtask cuda-build`,
# xz'd). Writes to $OUT/prefill/.
#   1. the GPU test binaries (prefill GEMMs, ops, decode kernels);
#   2. compare-devices on the tiny model and on 2 layers of 20B shape (prefill, 600 decode
#      steps and 64 greedy steps against the CPU);
#   3. gptoss bench on the 20B-shaped file at 2048 prompt tokens: the tensor-core path, then
#      the generic Candle path (--no-fast-decode) as the in-call baseline, then a stage profile.
# SKIP_TESTS=1 skips 1 and 2.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
B=/tmp/bin; R=${OUT:-/tmp}/prefill; mkdir -p $B $R
for f in gptoss cuda_prefill cuda_smoke cuda_decode; do
  [ -f .carry/$f.xz ] && xz -dc .carry/$f.xz > $B/$f && chmod +x $B/$f
done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf > $R/gen.txt 2>&1 &
if [ -z "${SKIP_TESTS:-}" ]; then
  for t in cuda_prefill cuda_smoke cuda_decode; do
    [ -x $B/$t ] && $B/$t --test-threads 1 2>&1 | grep -E -A2 "^test |panicked|seed|test result" | head -40 | tee -a $R/tests.txt
  done
  $B/gptoss compare-devices --model tiny --device cuda --steps 64 2>&1 | tail -3 | tee $R/compare_tiny.txt
  $B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf > /dev/null 2>&1
  $B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda --steps 64 2>&1 | tail -3 | tee $R/compare_20b2.txt
fi
wait
M="--model /tmp/20b.gguf --device cuda --json"
$B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>&1 | tail -1 | tee -a $R/bench.jsonl
$B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 0 --reps 1 --no-fast-decode 2>&1 | tail -1 | tee -a $R/bench.jsonl
$B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 0 --reps 1 --profile 2>&1 | tail -1 | tee -a $R/bench.jsonl
