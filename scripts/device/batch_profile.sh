#!/usr/bin/env bash
# #13: where a batched decode step's GPU time goes. ncu over ~2 decode steps of `gptoss bench
# --concurrency 64` on the 20B-shaped file (128-token prompts; launches 15,000 on, past the
# prompts), per kernel name: total µs, launches, µs each (scripts/device/ncu_summary.py). Once
# with the default experts (tensor-core tiles at 64 sequences) and once with the MMA row kernels
# (GPTOSS_MOE_MMA=1 --moe-grouped-min-slots 100000); the same bench without ncu gives the
# wall time of a step (64 / aggregate tok/s), so wall minus kernel time is what the GPU waits
# on the host. Carry .carry/gptoss.xz.
. scripts/device/common.sh bprof
export PATH=/usr/local/cuda/bin:$PATH
{
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
M="--model /tmp/20b.gguf --device cuda --json --prompt-tokens 128 --gen-tokens 64 --reps 1 --concurrency 64"
for v in default mma; do
  X=""; [ $v = mma ] && X="--moe-grouped-min-slots 100000"
  E=""; [ $v = mma ] && E="GPTOSS_MOE_MMA=1"
  step "$v: wall"
  env $E $B/gptoss bench $M $X 2>/dev/null | tail -1 | tee $R/${v}_bench.json
  step "$v: ncu"
  env $E ncu --metrics gpu__time_duration.sum --launch-skip ${SKIP:-15000} --launch-count ${COUNT:-1300} --csv \
    $B/gptoss bench $M $X > $R/${v}_ncu.csv 2>$R/${v}_ncu.err
  python3 scripts/device/ncu_summary.py $R/${v}_ncu.csv | head -30
  tail -2 $R/${v}_ncu.err
done
step done
} 2>&1 | tee $R/log.txt
