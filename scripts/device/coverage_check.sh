#!/usr/bin/env bash
# CUDA coverage (issue #16) on the H200 in one call of the device tool:
# 1. the build made for compute_80 only (`cargo xtask cuda-build --arch 80`: PTX that the driver
#    JIT-compiles for this card, i.e. the code path every non-Hopper GPU runs): the cuda_* test
#    binaries and `compare-devices` on the tiny model;
# 2. `--cpu-moe N` (MoE blocks of the first N layers on the CPU) with the default build:
#    `compare-devices` on the tiny model and on 2 layers of 20B shape, all-GPU and split;
# 3. decode / prefill tok/s of the 20B-shaped file all-GPU and with `--cpu-moe 12`, beside
#    llama.cpp's `llama-bench` (-ngl 99, and --n-cpu-moe 12) on the same file and threads.
# Carry in .carry/: c80/{gptoss,cuda_smoke,cuda_decode,cuda_prefill}.xz (the compute_80 build),
# gptoss.xz (the default build), and llama-src.tgz or llama-bench.xz.* (see llama_build.sh).
# SKIP_C80=1 skips part 1, ONLY_C80=1 runs only part 1; SKIP_LLAMA=1 times only ours.
. scripts/device/common.sh cov
B80=/tmp/bin80; mkdir -p $B80
THREADS=$(nproc)
[ "${SKIP_LLAMA:-0}" = 1 ] || . scripts/device/llama_build.sh llama-bench
unpack .carry/c80 $B80
nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | tee $R/gpu.txt

if [ "${SKIP_C80:-0}" != 1 ]; then
  step "compute_80 build: test binaries"
  for t in cuda_smoke cuda_decode cuda_prefill; do
    [ -x $B80/$t ] && $B80/$t 2>&1 | grep -E "test result|FAILED|panicked" | head -6 | tee -a $R/c80_tests.txt
  done
  step "compute_80 build: compare-devices tiny"
  $B80/gptoss compare-devices --model tiny --device cuda --steps 64 2>&1 | tail -1 | tee $R/c80_compare_tiny.txt
  [ "${ONLY_C80:-0}" = 1 ] && exit 0
fi

step "cpu-moe: compare-devices tiny (all GPU, --cpu-moe 1, --cpu-moe 2)"
for n in 0 1 2; do
  $B/gptoss compare-devices --model tiny --device cuda --steps 64 --cpu-moe $n 2>&1 | tail -1 | tee $R/moe_compare_tiny_$n.txt
done
step "cpu-moe: 2 layers of 20B shape (all GPU, --cpu-moe 1)"
$B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf 2>&1 | tail -1
for n in 0 1; do
  $B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda --steps 64 --cpu-moe $n 2>&1 | tail -1 | tee $R/moe_compare_20b2_$n.txt
done
step "cpu-moe: batched path (compare-batch tiny, --cpu-moe 1)"
$B/gptoss compare-batch --model tiny --device cuda --batch 16 --steps 32 --cpu-moe 1 2>&1 | tail -2 | tee $R/moe_cbatch_tiny.txt

step gen 20b
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
$B/gptoss inspect /tmp/20b.gguf --check --device cuda --vram 16G 2>&1 | tail -2 | tee $R/check_16g.txt
if [ "${SKIP_LLAMA:-0}" != 1 ]; then
  while [ ! -f /tmp/llama-build.rc ]; do sleep 5; done
  step "llama.cpp build rc $(cat /tmp/llama-build.rc)"
fi
M="--model /tmp/20b.gguf --device cuda --json"
step "gptoss all-GPU"
$B/gptoss bench $M --prompt-tokens 512 --gen-tokens 128 --reps 1 2>/dev/null | tail -1 | tee $R/ours_gpu.json
step "gptoss --cpu-moe 12"
$B/gptoss bench $M --prompt-tokens 512 --gen-tokens 64 --reps 1 --cpu-moe 12 2>/dev/null | tail -1 | tee $R/ours_cpumoe12.json
if [ "${SKIP_LLAMA:-0}" != 1 ] && [ "$(cat /tmp/llama-build.rc)" = 0 ]; then
  if [ ! -f /tmp/llama-bins.carried ]; then
    strip -o /tmp/llama-bench.s $LD/llama-bench && xz -T16 -6 -c /tmp/llama-bench.s | split -b 15M - ${OUT:-/tmp}/llama-bench.xz.
  fi
  step "llama-bench all-GPU"
  $LD/llama-bench -m /tmp/20b.gguf -ngl 99 -fa 1 -t $THREADS -p 512 -n 128 -r 1 -o json 2>/dev/null > $R/llama_gpu.json
  step "llama-bench --n-cpu-moe 12"
  $LD/llama-bench -m /tmp/20b.gguf -ngl 99 -fa 1 -t $THREADS -ncmoe 12 -p 512 -n 64 -r 1 -o json 2>/dev/null > $R/llama_cpumoe12.json
elif [ "${SKIP_LLAMA:-0}" != 1 ]; then
  tail -20 /tmp/llama-build.log
fi
python3 - "$R" <<'PY'
import json, os, sys
R = sys.argv[1]
def load(n):
    try: return json.load(open(os.path.join(R, n)))
    except Exception: return None
def llama(rows, key):
    if not rows: return None
    for r in rows:
        if (key == "pp" and r.get("n_prompt", 0) > 0) or (key == "tg" and r.get("n_gen", 0) > 0):
            return r.get("avg_ts")
for name, ours, ll in [("all GPU", "ours_gpu.json", "llama_gpu.json"),
                       ("--cpu-moe 12", "ours_cpumoe12.json", "llama_cpumoe12.json")]:
    o, l = load(ours), load(ll)
    od = o and o.get("decode_tok_s"); op = o and o.get("prefill_tok_s")
    ld, lp = llama(l, "tg"), llama(l, "pp")
    r = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
    print(f"{name:>14}: decode {od} vs llama {ld} ({r(od, ld)}); prefill512 {op} vs llama {lp} ({r(op, lp)})")
PY
ls -la $R
