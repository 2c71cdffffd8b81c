#!/usr/bin/env bash
# One call on the GPU machine for the many-sequences engine: the CUDA test binaries (the paged
# decode attention included), compare-devices on the tiny model and on 2 layers of 20B shape
# (the fused decode reading the paged KV pool), batch-1 speed on the 20B-shaped file, and
# `bench --concurrency` (several sequences per step; on CUDA these run the generic batched
# path until the batched kernels exist). Carry in .carry/: gptoss.xz, cuda_*.xz (from
# `cargo xtask cuda-build`, xz'd). JSON lines go to $OUT/serve/.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTOSS_CACHE=/tmp/gc
B=/tmp/bin; R=${OUT:-/tmp}/serve; mkdir -p $B $R
for f in .carry/*.xz; do xz -dc "$f" > $B/$(basename "$f" .xz); chmod +x $B/$(basename "$f" .xz); done
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() { echo "== $*"; }
for t in cuda_decode cuda_smoke cuda_prefill; do
  step $t; [ -x $B/$t ] && $B/$t 2>&1 | grep -E "test result|FAILED|panicked" | head -5
done
step compare tiny
$B/gptoss compare-devices --model tiny --device cuda --steps 64 2>&1 | tail -2 | tee $R/compare_tiny.txt
step concurrency tiny
$B/gptoss bench --model tiny --device cuda --prompt-tokens 128 --gen-tokens 64 --reps 1 --concurrency 1,4,16 --json 2>&1 | tail -3 | tee $R/conc_tiny.jsonl
step 2-layer 20b compare
$B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf 2>&1 | tail -1
$B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda --steps 64 2>&1 | tail -2 | tee $R/compare_20b2.txt
if [ "${SKIP_20B:-0}" != 1 ]; then
  step gen 20b
  [ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
  M="--model /tmp/20b.gguf --device cuda --json"
  step plan 20b
  $B/gptoss inspect /tmp/20b.gguf --check 2>&1 | grep -A9 "CUDA fast form" | tee $R/plan20b.txt
  step bench 20b batch 1
  $B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 128 --reps 2 2>&1 | tail -1 | tee -a $R/bench20b.jsonl
  $B/gptoss bench $M --prompt-tokens 0 --gen-tokens 128 --depth 4096 --reps 1 2>&1 | tail -1 | tee -a $R/bench20b.jsonl
  step concurrency 20b
  $B/gptoss bench $M --prompt-tokens 128 --gen-tokens 32 --reps 1 --concurrency 1,8,32 2>&1 | tail -3 | tee $R/conc20b.jsonl
fi
