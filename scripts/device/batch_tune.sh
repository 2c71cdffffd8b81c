#!/usr/bin/env bash
# The batched decode's kernel checks and tuning figures, in one call: the CUDA test binaries
# carried (cuda_decode, cuda_prefill), compare-batch on the tiny model and 2 layers of 20B
# shape, then on the 20B-shaped file: the median all-decode step time of a 64-sequence batch,
# its stage profile (synchronized per stage), and `bench --concurrency` with the default
# expert kernels and with each kind forced (--moe-grouped-min-slots 1: tensor cores always;
# 100000: row kernels always). Carry in .carry/: gptoss.xz and cuda_*.xz.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTOSS_CACHE=/tmp/gc
B=/tmp/bin; R=${OUT:-/tmp}/tune; mkdir -p $B $R
step() { echo "== $* (${SECONDS}s)"; }
for f in .carry/*.xz; do xz -dc "$f" > $B/$(basename "$f" .xz); chmod +x $B/$(basename "$f" .xz); done
for t in cuda_decode cuda_prefill cuda_smoke; do
  [ -x $B/$t ] && { step $t; $B/$t 2>&1 | grep -E "test result|FAILED|panicked|gpu .* vs" | head -6; }
done
G=$B/gptoss
step compare-batch tiny
$G compare-batch --model tiny --device cuda --batch 64 --steps 64 2>&1 | tail -1
$G gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf > /dev/null 2>&1
step compare-batch 20b2
$G compare-batch --model /tmp/20b2.gguf --device cuda --batch 64 --steps 64 2>&1 | tail -1
$G gen-model --preset 20b --out /tmp/20b.gguf > /dev/null 2>&1
step compare-batch 20b step time
$G compare-batch --model /tmp/20b.gguf --device cuda --batch 64 --steps 24 --watch 1 2>&1 | tail -2 | head -1 | tee $R/step.json
step compare-batch 20b profile
$G compare-batch --model /tmp/20b.gguf --device cuda --batch 64 --steps 12 --watch 1 --profile 2>&1 | tail -2 | head -1 | tee $R/profile.json
M="--model /tmp/20b.gguf --device cuda --json --prompt-tokens 128 --gen-tokens 128 --reps 1"
step concurrency default
$G bench $M --concurrency ${NPL:-1,8,32,64,128,256} 2>/dev/null | tee $R/conc.jsonl | python3 -c "
import json,sys
for l in sys.stdin: o=json.loads(l); print(o['concurrency'], round(o['decode_tok_s'],1), round(o['ttft_ms_median'],1))"
for s in 1 100000; do
  step concurrency min-slots $s
  $G bench $M --concurrency ${NPL2:-32,64,128,256} --moe-grouped-min-slots $s 2>/dev/null | python3 -c "
import json,sys
for l in sys.stdin: o=json.loads(l); print(o['concurrency'], round(o['decode_tok_s'],1))"
done
