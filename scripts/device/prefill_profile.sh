#!/usr/bin/env bash
# ncu over the tensor-core prefill (20B-shaped file, 2048-token prompt): per-kernel times of one
# whole forward (the one after bench's warm-up pass), then the Speed of Light, compute, memory,
# occupancy and warp-stall sections of one expert gate/up launch. Carry .carry/gptoss.xz.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
B=/tmp/bin; R=${OUT:-/tmp}/pprof; mkdir -p $B $R
[ -x $B/gptoss ] || { xz -dc .carry/gptoss.xz > $B/gptoss && chmod +x $B/gptoss; }
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
M="--model /tmp/20b.gguf --device cuda --json --prompt-tokens 2048 --gen-tokens 0 --reps 1"
K='regex:pg_|attention_prefill_tf32|dec_quant'
# Per layer: quantize + QKV, attention, quantize + O, route, split, gate/up, split, down,
# combine (11 launches); then quantize + output head. The warm-up forward comes first.
N=$(( 24 * 11 + 2 ))
ncu --metrics gpu__time_duration.sum -k "$K" --launch-skip $N --launch-count $N --csv \
  $B/gptoss bench $M > $R/times.csv 2> $R/times.err
python3 scripts/device/ncu_summary.py $R/times.csv
tail -2 $R/times.err
ncu -k regex:pg_mxb_swiglu --launch-skip 30 --launch-count 1 --section SpeedOfLight \
  --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis --section Occupancy \
  --section WarpStateStats --section LaunchStats $B/gptoss bench $M > $R/gate_up.txt 2>&1
grep -E "Duration|Throughput|Pipe|Issue|Stall|Occupancy|Registers|Shared Memory|Block Limit|Warp Cycles|Eligible|Active Warps|L1|L2|DRAM|Bank" $R/gate_up.txt | head -60
