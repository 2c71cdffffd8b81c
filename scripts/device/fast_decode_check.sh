#!/usr/bin/env bash
# Checks and times the fused CUDA decode path in one call of the device tool. Carry in .carry/:
# gptoss.xz (from `cargo xtask cuda-build`, xz'd). Writes JSON lines to $OUT/fast/.
#   1. compare-devices on the tiny model: prefill, 600 token-by-token decode steps (sliding
#      compaction and full-layer growth included) and 64 greedy steps against the CPU;
#   2. gptoss bench on the 20B-shaped file: fused decode with a CUDA graph, without it, and the
#      generic Candle path, at depth 0; the fused path at depth 4096 and 32768;
#   3. compare-devices on 2 layers of 20B shape (head dim 64, several key splits).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
B=/tmp/bin; R=${OUT:-/tmp}/fast; mkdir -p $B $R
xz -dc .carry/gptoss.xz > $B/gptoss && chmod +x $B/gptoss
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step() { echo "== $*"; }
step tiny compare
$B/gptoss compare-devices --model tiny --device cuda --steps 64 2>&1 | tail -3 | tee $R/compare_tiny.txt
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
M="--model /tmp/20b.gguf --device cuda --json"
for v in "" "--no-cuda-graph" "--no-fast-decode"; do
  step bench depth 0 $v
  $B/gptoss bench $M --prompt-tokens 512 --gen-tokens 128 --reps 2 $v 2>&1 | tail -1 | tee -a $R/bench.jsonl
done
step 2-layer 20b compare
$B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf 2>&1 | tail -1
$B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda --steps 64 2>&1 | tail -3 | tee $R/compare_20b2.txt
step bench depth 4096
$B/gptoss bench $M --prompt-tokens 0 --gen-tokens 128 --depth 4096 --reps 1 2>&1 | tail -1 | tee -a $R/bench.jsonl
step bench depth 32768
$B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 64 --depth 32768 --reps 1 2>&1 | tail -1 | tee -a $R/bench.jsonl
