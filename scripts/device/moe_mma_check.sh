#!/usr/bin/env bash
# #13: the batched decode's experts on int8 MMAs (`mm_moe_*`, kernels/moe_mma.cu; opt-in with
# GPTOSS_MOE_MMA=1) against the dp4a row kernels and the 64-slot tensor-core tiles, and #14/#16's
# fused RMSNorm + router (GPTOSS_FUSED_ROUTER=1), in one call:
# 1. kernel tests: cuda_smoke's moe_router_rows_matches_an_f64_loop (session 15's `rows_router`,
#    the batched step's router in one launch for up to 256 rows; opt-in with
#    GPTOSS_ROWS_ROUTER=1, which this script sets, so steps 2-3 run it), cuda_prefill's
#    moe_row_kernels_match_cpu (both row kernels), then every test of the four binaries;
# 2. compare-batch (a sequence inside a staggered batch of 64, every MoE layer on the row
#    kernels: --moe-grouped-min-slots 100000) with the MMA kernels, tiny and 2 layers of 20B;
#    then the default kernels on tiny;
# 3. aggregate decode tok/s on the 20B-shaped file (128-token prompts, 128 generated) at
#    concurrency $NPL: default (dp4a below 129 slots, tensor cores from there), the same with
#    the composed router, MMA at every size; then compare-devices with the fused router (tiny,
#    2 layers of 20B and of 120b) and without; then MMA below 129 slots only, and the default
#    again;
# 4. batch-1 decode / prefill with the fused router and without, alternating (ROUNDS, default 2);
#    with M120=1 also the full-size 120b split set in /dev/shm (fused on, off, on);
# 5. `gptoss serve` load test on the 20B-shaped file (64 streams, 128 requests of 64 tokens, the
#    default sampling: temperature 1, drawn on the device), with the MMA kernels; SERVE=0 skips it.
# Carry in .carry/: bins.tar.xz (`scripts/device/pack_carry.sh`: gptoss and the cuda_* test
# binaries). SKIP_CHECKS=1 skips the checks. PART=checks runs steps 1-2 and the compare-devices
# of step 3 and generates the 20B-shaped file (no timing: a llama.cpp build may share the host);
# PART=times the timings alone (steps 3-5); unset, everything in this order.
# The most wanted first: a call cut short by the device budget keeps what it finished ($R/log.txt).
. scripts/device/common.sh moe_mma
NPL=${NPL:-8,32,64,128}
PART=${PART:-all}
# The batched router in one launch is opt-in until run here; every step below takes it, except
# the one timing that compares it with the composed router.
export GPTOSS_ROWS_ROUTER=${GPTOSS_ROWS_ROUTER:-1}
run_checks() { [ "${SKIP_CHECKS:-0}" != 1 ] && [ "$PART" != times ]; }
run_timings() { [ "$PART" != checks ]; }
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if run_checks; then
  step "kernel tests"
  [ -x $B/cuda_smoke ] && $B/cuda_smoke moe_router 2>&1 | grep -E "test result|FAILED|panicked"
  [ -x $B/cuda_prefill ] && $B/cuda_prefill moe_row 2>&1 | grep -E "test result|FAILED|panicked|max \|"
  kernel_tests cuda_decode cuda_smoke cuda_prefill cuda_kv
  $B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf > /dev/null 2>&1
  step "compare-batch, MMA row kernels"
  for m in tiny /tmp/20b2.gguf; do
    echo "$m: $(GPTOSS_MOE_MMA=1 $B/gptoss compare-batch --model $m --device cuda --batch 64 --steps 64 --moe-grouped-min-slots 100000 2>&1 | tail -2 | tr '\n' ' ')"
  done
  step "compare-batch, default kernels"
  echo "tiny: $($B/gptoss compare-batch --model tiny --device cuda --batch 64 --steps 64 2>&1 | tail -2 | tr '\n' ' ')"
fi
step "gen 20b"
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
conc() {
  python3 -c "
import json,sys
for l in sys.stdin:
    l=l.strip()
    if l.startswith('{'):
        d=json.loads(l); print(d.get('concurrency'), round(d.get('decode_tok_s',0),1), end='; ')
print()"
}
M="--model /tmp/20b.gguf --device cuda --json --prompt-tokens 128 --gen-tokens 128 --reps 1 --concurrency $NPL"
if run_timings; then
  step "concurrency: default"
  $B/gptoss bench $M 2>/dev/null | tee $R/default.jsonl | conc
  step "concurrency: default, composed router (GPTOSS_ROWS_ROUTER=0)"
  GPTOSS_ROWS_ROUTER=0 $B/gptoss bench $M 2>/dev/null | tee $R/composed_router.jsonl | conc
  step "concurrency: MMA at every size"
  GPTOSS_MOE_MMA=1 $B/gptoss bench $M --moe-grouped-min-slots 100000 2>/dev/null | tee $R/mma_all.jsonl | conc
fi
if run_checks; then
  step "compare-devices, fused router on / off"
  $B/gptoss gen-model --preset 120b --layers 2 --out /tmp/120b2.gguf > /dev/null 2>&1
  for m in tiny /tmp/20b2.gguf /tmp/120b2.gguf; do
    echo "$m fused: $(GPTOSS_FUSED_ROUTER=1 $B/gptoss compare-devices --model $m --device cuda 2>&1 | tail -1)"
  done
  for m in tiny /tmp/20b2.gguf; do
    echo "$m not fused: $($B/gptoss compare-devices --model $m --device cuda 2>&1 | tail -1)"
  done
  rm -f /tmp/120b2.gguf /tmp/20b2.gguf
fi
if ! run_timings; then step done; exit 0; fi
step "concurrency: MMA below 129 slots"
GPTOSS_MOE_MMA=1 $B/gptoss bench $M 2>/dev/null | tee $R/mma_few.jsonl | conc
step "concurrency: default again"
$B/gptoss bench $M 2>/dev/null | tee $R/default2.jsonl | conc
step "batch 1, fused router on / off"
for round in $(seq 1 ${ROUNDS:-2}); do
  for f in 1 0; do
    echo "fused=$f round $round: $(GPTOSS_FUSED_ROUTER=$f $B/gptoss bench --model /tmp/20b.gguf --device cuda --json --prompt-tokens 512 --gen-tokens 128 --reps 3 2>/dev/null | tok)"
  done
done
if [ "${M120:-0}" = 1 ]; then
  step "120b (/dev/shm), fused router on / off / on"
  $B/gptoss gen-model --preset 120b --out /dev/shm/120b.gguf 2>&1 | tail -1
  F=$(ls /dev/shm/120b-00001-of-*.gguf)
  for f in 1 0 1; do
    echo "120b fused=$f: $(GPTOSS_FUSED_ROUTER=$f $B/gptoss bench --model $F --device cuda --json --prompt-tokens 512 --gen-tokens 128 --reps 2 2>/dev/null | tok)"
  done
  rm -f /dev/shm/120b-*.gguf
fi
[ "${SERVE:-1}" = 1 ] && step "serve load test" && GPTOSS_BIN=$B/gptoss GPTOSS_MOE_MMA=1 GPTOSS_SERVE_MODEL=/tmp/20b.gguf GPTOSS_SERVE_DEVICE=cuda \
  timeout 240 python3 scripts/serve/load_test.py --streams 64 --requests 128 --max-tokens 64 2>&1 | tail -4
step done
} 2>&1 | tee $R/log.txt
