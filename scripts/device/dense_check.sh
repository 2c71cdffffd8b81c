#!/usr/bin/env bash
# #16: the CUDA fast path on every dense type of the published variants. Q8_0 / Q4_0 / Q5_0 are
# split exactly into one int8 plane; every other type (F16, BF16, Q5_1, IQ4_NL, the K-quants)
# into two int8 planes of 15-bit block integers. One call:
# - the kernel tests (two-plane gemv, QKV + RoPE, prefill GEMM among them);
# - `inspect --check` (the path each file takes) and `compare-devices` (CUDA fast path against
#   the CPU, 64 greedy tokens) on tiny files of each type, where K-quants fall back (widths 64
#   and 128), and on 2 layers of 20B shape, where attn_output (4096 wide) is a real K-quant;
# - llama.cpp's llama-bench built in the background meanwhile (kept for the next call).
# With RACE=1 instead: compare-devices on tiny files of TINY_TYPES, then decode / prefill of
# full-size 20B files of each type in RACE_TYPES next to llama-bench on the same files (at
# most 8 result files come back: keep RACE_TYPES to 2 or 3). Carry: .carry/gptoss.xz, cuda_decode.xz, cuda_prefill.xz,
# llama-src.tgz (and llama-bench.xz.* from an earlier call).
. scripts/device/common.sh dense
. scripts/device/llama_build.sh llama-bench
if [ "${RACE:-0}" = 1 ]; then
  for t in ${TINY_TYPES:-}; do
    step "tiny $t"
    $B/gptoss gen-model --preset tiny --dense-type $t --out /tmp/tiny-$t.gguf 2>&1 | tail -1
    $B/gptoss compare-devices --model /tmp/tiny-$t.gguf --device cuda --steps 64 2>&1 | tail -3 | cut -c1-400
  done
  while [ ! -f /tmp/llama-build.rc ]; do sleep 5; done
  step "llama.cpp build rc $(cat /tmp/llama-build.rc)"
  for t in ${RACE_TYPES:-q8_0 f16 q4_k}; do
    step "20b $t: gen, path, bench, llama-bench"
    rm -f /tmp/20b-*.gguf
    $B/gptoss gen-model --preset 20b --dense-type $t --out /tmp/20b-$t.gguf 2>&1 | tail -1
    $B/gptoss inspect --check /tmp/20b-$t.gguf 2>&1 | grep "CUDA path"
    $B/gptoss bench --model /tmp/20b-$t.gguf --device cuda --quantized-dense --json \
      --prompt-tokens 512 --gen-tokens 128 --reps 3 > $R/ours_$t.json 2>/tmp/ours_$t.err || tail -3 /tmp/ours_$t.err
    $LD/llama-bench -m /tmp/20b-$t.gguf -ngl 99 -fa 1 -p 512 -n 128 -r 3 -o json > $R/llama_$t.json 2>/dev/null
    python3 - $R $t <<'PY'
import json, sys
R, t = sys.argv[1], sys.argv[2]
o = json.load(open(f"{R}/ours_{t}.json"))
try:
    l = json.load(open(f"{R}/llama_{t}.json"))
except Exception:
    l = []
ll = {(r["n_prompt"], r["n_gen"]): r["avg_ts"] for r in l}
for name, a, b in [("decode 128", o["decode_tok_s"], ll.get((0, 128))),
                   ("prefill 512", o["prefill_tok_s"], ll.get((512, 0)))]:
    print(f"{t:6} {name:12} gptoss {a:10.1f}  llama.cpp {b or 0:10.1f}  {f'{a / b:.2f}x' if b else '-'}")
print(f"{t:6} device memory in use (gptoss): {o['device_mem_used_bytes'] / 2**30:.2f} GiB")
PY
  done
  exit 0
fi
step "kernel tests"
$B/cuda_decode 2>&1 | grep -E "test result|FAILED|panicked" | tee $R/cuda_decode.txt
$B/cuda_prefill 2>&1 | grep -E "test result|FAILED|panicked" | tee $R/cuda_prefill.txt
for t in q8_0 f16 bf16 q5_1 iq4_nl q5_k; do
  step "tiny $t"
  $B/gptoss gen-model --preset tiny --dense-type $t --out /tmp/tiny-$t.gguf 2>&1 | tail -1
  $B/gptoss inspect --check /tmp/tiny-$t.gguf 2>&1 | grep "CUDA path" | tee $R/path_tiny_$t.txt
  $B/gptoss compare-devices --model /tmp/tiny-$t.gguf --device cuda --steps 64 2>&1 | tail -1 | tee $R/compare_tiny_$t.txt
done
for t in ${TYPES_20B:-f16 q4_k q5_k q6_k}; do
  step "20b x2 layers $t"
  $B/gptoss gen-model --preset 20b --layers 2 --dense-type $t --out /tmp/20b2-$t.gguf 2>&1 | tail -1
  $B/gptoss inspect --check /tmp/20b2-$t.gguf 2>&1 | grep "CUDA path" | tee $R/path_20b2_$t.txt
  $B/gptoss compare-devices --model /tmp/20b2-$t.gguf --device cuda --steps 64 2>&1 | tail -1 | tee $R/compare_20b2_$t.txt
  rm -f /tmp/20b2-$t.gguf
done
step "waiting for llama.cpp"
for i in $(seq 1 ${WAIT_LLAMA:-60}); do [ -f /tmp/llama-build.rc ] && break; sleep 5; done
if [ "$(cat /tmp/llama-build.rc 2>/dev/null)" = 0 ] && [ ! -f /tmp/llama-bins.carried ]; then
  strip -o /tmp/llama-bench.s $LD/llama-bench && xz -T16 -6 -c /tmp/llama-bench.s | split -b 15M - $R/llama-bench.xz.
fi
step "done"
