#!/usr/bin/env bash
# #14/#16: the MLP's RMSNorm fused into the router (`dec_rmsnorm_router`, one launch fewer per
# layer of the fused decode; opt-in with GPTOSS_FUSED_ROUTER=1). The kernel tests
# (`cuda_decode`: `rmsnorm_router_matches_cpu`), `compare-devices` with it on tiny, 2 layers of
# 20B and 2 layers of 120b shape, then decode / prefill tok/s with it and without, alternating,
# on the 20B-shaped file (ROUNDS rounds, default 2) and on the full-size 120b split set in
# /dev/shm (on, off, on). Carry in .carry/: gptoss.xz, cuda_decode.xz. One log ($R/log.txt).
. scripts/device/common.sh fused
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step "kernel tests"
kernel_tests cuda_decode
step "compare-devices (fused)"
export GPTOSS_FUSED_ROUTER=1
echo "tiny: $($B/gptoss compare-devices --model tiny --device cuda 2>&1 | tail -1)"
$B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf > /dev/null 2>&1
echo "20b2: $($B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda 2>&1 | tail -1)"
$B/gptoss gen-model --preset 120b --layers 2 --out /tmp/120b2.gguf > /dev/null 2>&1
echo "120b2: $($B/gptoss compare-devices --model /tmp/120b2.gguf --device cuda 2>&1 | tail -1)"
# The default path too: its norm and router kernels were refactored with the fused one
# (block_rms_load, router_row_rank) after the last GPU run.
echo "tiny, not fused: $(GPTOSS_FUSED_ROUTER=0 $B/gptoss compare-devices --model tiny --device cuda 2>&1 | tail -1)"
echo "20b2, not fused: $(GPTOSS_FUSED_ROUTER=0 $B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda 2>&1 | tail -1)"
rm -f /tmp/120b2.gguf /tmp/20b2.gguf
step "gen 20b"
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
tok() { python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(f\"decode {d['decode_tok_s']:.1f} prefill {d['prefill_tok_s']:.1f}\")"; }
for round in $(seq 1 ${ROUNDS:-2}); do
  for f in 1 0; do
    echo "20b fused=$f round $round: $(GPTOSS_FUSED_ROUTER=$f $B/gptoss bench --model /tmp/20b.gguf --device cuda --json --prompt-tokens 512 --gen-tokens 128 --reps 3 2>/dev/null | tok)"
  done
done
step "gen 120b (/dev/shm)"
rm -f /tmp/20b.gguf
$B/gptoss gen-model --preset 120b --out /dev/shm/120b.gguf 2>&1 | tail -1
F=$(ls /dev/shm/120b-00001-of-*.gguf)
for f in 1 0 1; do
  echo "120b fused=$f: $(GPTOSS_FUSED_ROUTER=$f $B/gptoss bench --model $F --device cuda --json --prompt-tokens 512 --gen-tokens 128 --reps 2 2>/dev/null | tok)"
done
rm -f /dev/shm/120b-*.gguf
step "done"
} 2>&1 | tee $R/log.txt
