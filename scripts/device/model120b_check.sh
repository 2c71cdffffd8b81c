#!/usr/bin/env bash
# gpt-oss-120b's shape on one H200 in one call of the device tool: `compare-devices` on 2 layers
# of 120b shape (CUDA vs CPU, 64 greedy tokens), then the full-size random model (36 layers, 128
# experts, ~61 GiB) generated into /dev/shm (the disk is too small beside everything else) as
# the published files are, a split set `120b-0000N-of-00003.gguf` (gen-model's default for the
# 120b preset), its memory plan, and decode / prefill tok/s beside llama.cpp's `llama-bench` on
# the same files (both open the set from its first shard).
# Carry in .carry/: bins.tar.xz (pack_carry.sh) or gptoss.xz, and llama-bench.xz.* (saved by
# coverage_check.sh). SKIP_LLAMA=1 times only ours (no llama.cpp build or run). REPS (default
# 3): repetitions of each timing. FUSED (a list, default "0"): ours is timed once per value of
# GPTOSS_FUSED_ROUTER, in that order. SKIP_SMALL=1 skips the 2-layer compare-devices.
. scripts/device/common.sh m120
[ "${SKIP_LLAMA:-0}" = 1 ] || . scripts/device/llama_build.sh llama-bench
if [ "${SKIP_SMALL:-0}" != 1 ]; then
  step "2 layers of 120b shape"
  $B/gptoss gen-model --preset 120b --layers 2 --out /tmp/120b2.gguf 2>&1 | tail -1
  $B/gptoss compare-devices --model /tmp/120b2.gguf --device cuda --steps 64 2>&1 | tail -1 | tee $R/compare_120b2.txt
  rm -f /tmp/120b2.gguf
fi
step "gen 120b (full size, /dev/shm)"
$B/gptoss gen-model --preset 120b --out /dev/shm/120b.gguf 2>&1 | tail -4
ls -la /dev/shm/120b-*.gguf | tee $R/shards_120b.txt
F=$(ls /dev/shm/120b-00001-of-*.gguf)
$B/gptoss inspect $F --check --ctx 8192 2>&1 | tail -10 | tee $R/check_120b.txt
n=0
for f in ${FUSED:-0}; do
  n=$((n + 1))
  step "gptoss bench 120b, fused router $f"
  GPTOSS_FUSED_ROUTER=$f $B/gptoss bench --model $F --device cuda --json --prompt-tokens 512 --gen-tokens 128 \
    --reps ${REPS:-3} 2>/dev/null | tail -1 | tee $R/ours_120b_${n}_fused$f.json
done
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  step "llama-bench 120b"
  while [ ! -f /tmp/llama-build.rc ]; do sleep 5; done
  $LD/llama-bench -m $F -ngl 99 -fa 1 -p 512 -n 128 -r ${REPS:-3} -o json 2>/dev/null > $R/llama_120b.json
fi
python3 - "$R" <<'PY'
import glob, json, os, sys
R = sys.argv[1]
lp_path = os.path.join(R, "llama_120b.json")
vs = lambda ours, ref: f" vs llama {ref:.1f} ({ours/ref:.2f}x)" if ref else ""
lt = lp = None
if os.path.exists(lp_path):
    ll = json.load(open(lp_path))
    lt = [r["avg_ts"] for r in ll if r.get("n_gen", 0) > 0][0]
    lp = [r["avg_ts"] for r in ll if r.get("n_prompt", 0) > 0][0]
g = 1 << 30
for path in sorted(glob.glob(os.path.join(R, "ours_120b_*.json"))):
    try:
        o = json.load(open(path))
    except ValueError:
        print(f"{os.path.basename(path)}: no result")
        continue
    print(f"120b ({os.path.basename(path)[10:-5]}): decode {o['decode_tok_s']:.1f}{vs(o['decode_tok_s'], lt)}; prefill512 "
          f"{o['prefill_tok_s']:.1f}{vs(o['prefill_tok_s'], lp)}; fast decode {o['fast_decode']}; "
          f"device in use {o['device_mem_used_bytes']/g:.2f} GiB, plan {o['plan_device_total_bytes']/g:.2f} GiB, "
          f"load {o['load_s']:.1f} s{'' if lt else ' (llama.cpp not run)'}")
PY
rm -f /dev/shm/120b-*.gguf
