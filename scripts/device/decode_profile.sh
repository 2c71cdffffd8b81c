#!/usr/bin/env bash
# Per-kernel times of one fused decode step (ncu, 20B-shaped file, no CUDA graph so that each
# launch is profiled) and the stage breakdown of a 2048-token prefill; with PREFILL_KERNELS=1,
# also ncu over ~1,000 consecutive launches in the middle of that prefill (a layer or so), to
# tell GPU time from host overhead in the expert loop. Carry .carry/gptoss.xz.
# Prints one line per kernel name: total µs, launches, µs per launch.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
B=/tmp/bin; R=${OUT:-/tmp}/prof; mkdir -p $B $R
[ -x $B/gptoss ] || { xz -dc .carry/gptoss.xz > $B/gptoss && chmod +x $B/gptoss; }
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
M="--model /tmp/20b.gguf --device cuda --json"
$B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 0 --reps 1 --profile 2>&1 | tail -1 | tee $R/prefill_profile.json
L=${LAYERS:-24}
N=$(( L * 10 + 2 ))
ncu --metrics gpu__time_duration.sum -k regex:dec_ --launch-skip $(( N * 4 )) --launch-count $N --csv \
  $B/gptoss bench $M --prompt-tokens 0 --gen-tokens 8 --reps 1 --no-cuda-graph > $R/ncu.csv 2>$R/ncu.err
summarize() { python3 scripts/device/ncu_summary.py "$1"; }
summarize $R/ncu.csv
tail -3 $R/ncu.err
if [ "${PREFILL_KERNELS:-}" = 1 ]; then
  ncu --metrics gpu__time_duration.sum --launch-skip 3000 --launch-count 1000 --csv \
    $B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 0 --reps 1 --no-fast-decode \
    > $R/ncu_prefill.csv 2>$R/ncu_prefill.err
  summarize $R/ncu_prefill.csv
fi
