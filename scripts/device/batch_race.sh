#!/usr/bin/env bash
# Many sequences per step on the GPU, in one call of the device tool: the CUDA test binaries,
# `compare-batch` (a sequence inside a staggered batch of 64 against the same sequence alone) on
# the tiny model and on 2 layers of 20B shape, `compare-devices` (the batch-1 fused path), then
# aggregate decode throughput per concurrency on the 20B-shaped file: `gptoss bench
# --concurrency` against llama.cpp's `llama-batched-bench` on the same card and file, and the
# batch-1 race (`llama-bench`) as a regression check.
# Carry in .carry/: bins.tar.xz (scripts/device/pack_carry.sh) or gptoss.xz and cuda_*.xz,
# and either llama-src.tgz (llama.cpp from the llama-cpp-python 0.3.36 sdist, trimmed; built here in the
# background while the checks run) or llama-bench.xz.* and llama-batched-bench.xz.* (saved
# into $OUT/batch by an earlier call of this script). SKIP_CHECKS=1 runs only the timings.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTOSS_CACHE=/tmp/gc
B=/tmp/bin; R=${OUT:-/tmp}/batch; mkdir -p $B $R
NPL=${NPL:-1,8,32,64,128,256}
step() { echo "== $* (${SECONDS}s)"; }
. scripts/device/llama_build.sh llama-bench llama-batched-bench
. scripts/device/common.sh batch
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee /tmp/gpu.txt
if [ "${SKIP_CHECKS:-0}" != 1 ]; then
  for t in cuda_decode cuda_smoke cuda_prefill; do
    step $t; [ -x $B/$t ] && $B/$t 2>&1 | grep -E "test result|FAILED|panicked|max \|" | head -8
  done
  step compare-batch tiny
  $B/gptoss compare-batch --model tiny --device cuda --batch 64 --steps 64 2>&1 | tail -2 | tee $R/cbatch_tiny.txt
  step compare-devices tiny
  $B/gptoss compare-devices --model tiny --device cuda --steps 64 2>&1 | tail -1 | tee $R/compare_tiny.txt
  step 2-layer 20b
  $B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf 2>&1 | tail -1
  $B/gptoss compare-batch --model /tmp/20b2.gguf --device cuda --batch 64 --steps 64 2>&1 | tail -2 | tee $R/cbatch_20b2.txt
fi
step gen 20b
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
# Time nothing while the compiler shares the host.
while [ ! -f /tmp/llama-build.rc ]; do sleep 5; done
step "llama.cpp build rc $(cat /tmp/llama-build.rc)"
M="--model /tmp/20b.gguf --device cuda --json"
step gptoss concurrency
$B/gptoss bench $M --prompt-tokens 128 --gen-tokens 128 --reps 1 --concurrency $NPL 2>/dev/null | tee $R/ours_conc.jsonl
if [ "$(cat /tmp/llama-build.rc)" = 0 ]; then
  if [ ! -f /tmp/llama-bins.carried ] && [ ! -f $R/llama-batched-bench.xz.aa ]; then
    for t in llama-bench llama-batched-bench; do
      strip -o /tmp/$t.s $LD/$t && xz -T16 -6 -c /tmp/$t.s | split -b 15M - $R/$t.xz.
    done
  fi
  step llama-batched-bench
  $LD/llama-batched-bench -m /tmp/20b.gguf -ngl 99 -fa on -c 70000 -b 2048 -ub 512 -npp 128 -ntg 128 \
    -npl $NPL --output-format jsonl 2>/dev/null | grep '^{' | tee $R/llama_conc.jsonl
else
  tail -20 /tmp/llama-build.log
fi
if [ "${PROFILE:-0}" = 1 ]; then
  step compare-batch 20b profile
  $B/gptoss compare-batch --model /tmp/20b.gguf --device cuda --batch 64 --steps 12 --watch 1 --profile 2>&1 | grep '^{' | tee $R/profile20b.json
fi
if [ -n "${FORCE_NPL:-}" ]; then
  # Each expert kernel forced: tensor cores always (1), row kernels always (100000).
  for s in 1 100000; do
    step "concurrency, --moe-grouped-min-slots $s"
    $B/gptoss bench $M --prompt-tokens 128 --gen-tokens 128 --reps 1 --concurrency $FORCE_NPL \
      --moe-grouped-min-slots $s 2>/dev/null | tee $R/ours_conc_min$s.jsonl | python3 -c "
import json,sys
for l in sys.stdin: o=json.loads(l); print(o['concurrency'], round(o['decode_tok_s'],1))"
  done
fi
if [ "${SKIP_BATCH1:-0}" != 1 ]; then
  step batch 1
  $B/gptoss bench $M --prompt-tokens 512 --gen-tokens 128 --reps 2 2>/dev/null | tail -1 | tee $R/ours_b1.json
  [ -x $LD/llama-bench ] && $LD/llama-bench -m /tmp/20b.gguf -ngl 99 -fa 1 -p 512 -n 128 -r 2 -o json 2>/dev/null > $R/llama_b1.json
fi
python3 - "$R" <<'PY'
import json, os, sys
R = sys.argv[1]
def lines(n):
    try: return [json.loads(l) for l in open(os.path.join(R, n)) if l.startswith("{")]
    except Exception: return []
ours = {o["concurrency"]: o for o in lines("ours_conc.jsonl")}
ll = {o["pl"]: o for o in lines("llama_conc.jsonl")}
print(f"{'concurrency':>11} {'gptoss tok/s':>13} {'llama.cpp':>10} {'ratio':>6} {'TTFT p50 ms':>12} {'llama T_PP ms':>14} {'GiB':>6}")
for n in sorted(set(ours) | set(ll)):
    o, l = ours.get(n, {}), ll.get(n, {})
    a, b = o.get("decode_tok_s"), l.get("speed_tg")
    r = f"{a / b:.2f}x" if a and b else "-"
    mem = (o.get("device_mem_used_bytes") or 0) / 2**30
    print(f"{n:>11} {a or 0:>13.1f} {b or 0:>10.1f} {r:>6} {o.get('ttft_ms_median', 0):>12.1f} {1e3 * l.get('t_pp', 0):>14.1f} {mem:>6.2f}")
try:
    b1 = json.load(open(os.path.join(R, "ours_b1.json")))
    lb = json.load(open(os.path.join(R, "llama_b1.json")))
    tg = next(x["avg_ts"] for x in lb if x["n_gen"] == 128)
    pp = next(x["avg_ts"] for x in lb if x["n_prompt"] == 512)
    print(f"batch 1: decode {b1['decode_tok_s']:.1f} vs {tg:.1f} ({b1['decode_tok_s'] / tg:.2f}x), prefill 512 {b1['prefill_tok_s']:.1f} vs {pp:.1f} ({b1['prefill_tok_s'] / pp:.2f}x)")
except Exception as e:
    print(f"batch 1: {e}")
PY
# One archive (the device tool returns a limited number of files).
( cd $R && tar czf ../batch_results.tgz *.json *.jsonl *.txt 2>/dev/null )
