#!/usr/bin/env bash
# #14: the KV cache in f16 (CUDA's default now; `--kv-type f32` keeps f32). PART=tests: the
# kernel tests (`cuda_kv`: every f16 kernel bit for bit against its f32 instance on rounded
# values; `cuda_decode`), `compare-devices` on tiny and on 2 layers of 20B shape with the f16
# cache (and tiny with f32, and tiny IQ4_NL whose JSON comes back whole), `compare-batch` (a
# sequence inside a staggered batch against it alone, f16 pool), and compare-devices on a tiny
# file of each dense type in TINY_TYPES. PART=race: decode at depth 0,
# 4096 and 32768 with the f32 and the f16 cache beside llama-bench (its default f16 cache) on
# the same 20B-shaped file, and (MEM_8K=1) device memory at 8K context with each.
# Carry: .carry/gptoss.xz and, for PART=tests, cuda_kv.xz, cuda_decode.xz; for PART=race,
# llama-bench.xz.* or llama-src.tgz (PART=tests then PART=race in one call: the build overlaps
# the tests).
. scripts/device/common.sh kv
# llama-bench from .carry (llama-bench.xz.*), else built from .carry/llama-src.tgz in the
# background while the tests run.
. scripts/device/llama_build.sh llama-bench
if [ "${PART:-tests}" = tests ]; then
  # Everything into one log ($R/tests.txt): at most 8 files come back from a call.
  {
  step "kernel tests"
  kernel_tests cuda_kv cuda_decode
  step "compare-devices"
  echo "tiny f16: $($B/gptoss compare-devices --model tiny --device cuda 2>&1 | tail -1)"
  echo "tiny f32: $($B/gptoss compare-devices --model tiny --device cuda --kv-type f32 2>&1 | tail -1)"
  $B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf > /dev/null 2>&1
  echo "20b2 f16: $($B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda 2>&1 | tail -1)"
  for t in ${TINY_TYPES:-}; do
    $B/gptoss gen-model --preset tiny --dense-type $t --out /tmp/tiny-$t.gguf > /dev/null 2>&1
    $B/gptoss compare-devices --model /tmp/tiny-$t.gguf --device cuda > /tmp/cmp-$t.txt 2>&1
    echo "tiny $t: $(tail -1 /tmp/cmp-$t.txt)"
    grep -h "near tie" /tmp/cmp-$t.txt | cut -c1-240
  done
  step "compare-batch"
  $B/gptoss compare-batch --model tiny --device cuda 2>&1 | tail -1
  step "tests done"
  } 2>&1 | tee $R/tests.txt
  exit 0
fi
nvidia-smi --query-gpu=name --format=csv,noheader
step "gen 20b"
$B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
M="--model /tmp/20b.gguf --device cuda --json"
for kv in f32 f16; do
  step "gptoss --kv-type $kv"
  $B/gptoss bench $M --kv-type $kv --prompt-tokens 512 --gen-tokens 128 --reps 3 2>/dev/null | tail -1 > $R/ours_${kv}_d0.json
  for d in 4096 32768; do
    $B/gptoss bench $M --kv-type $kv --prompt-tokens 0 --gen-tokens 128 --depth $d --reps 1 2>/dev/null | tail -1 > $R/ours_${kv}_d$d.json
  done
  [ "${MEM_8K:-0}" = 1 ] && $B/gptoss bench $M --kv-type $kv --prompt-tokens 2048 --depth 8064 --gen-tokens 128 --reps 1 2>/dev/null | tail -1 > $R/ours_${kv}_8k.json
done
step "llama-bench"
for i in $(seq 1 ${WAIT_LLAMA:-60}); do [ -f /tmp/llama-build.rc ] && break; sleep 5; done
$LD/llama-bench -m /tmp/20b.gguf -ngl 99 -fa 1 -p 0 -n 128 -d 0,4096,32768 -r 1 -o json > $R/llama_tg.json 2>/dev/null
python3 - "$R" <<'PY'
import json, os, sys
R = sys.argv[1]
try:
    ld = {r["n_depth"]: r["avg_ts"] for r in json.load(open(os.path.join(R, "llama_tg.json")))}
except Exception:
    ld = {}
g = 1 << 30
for d in [0, 4096, 32768]:
    o = {kv: json.load(open(os.path.join(R, f"ours_{kv}_d{d}.json"))) for kv in ["f32", "f16"]}
    a, b, l = o["f32"]["decode_tok_s"], o["f16"]["decode_tok_s"], ld.get(d)
    vs = f"llama.cpp {l:7.1f}  ratios {a / l:.2f}x / {b / l:.2f}x" if l else "llama.cpp not run"
    print(f"decode depth {d:5}: f32 KV {a:7.1f}  f16 KV {b:7.1f} ({b / a:.3f}x)  {vs}")
for kv in ["f32", "f16"] if os.path.exists(os.path.join(R, "ours_f16_8k.json")) else []:
    o = json.load(open(os.path.join(R, f"ours_{kv}_8k.json")))
    p = json.load(open(os.path.join(R, f"ours_{kv}_d0.json")))
    print(f"{kv} KV: 8K plan {o['plan_device_total_bytes']/g:.2f} GiB, in use {o['device_mem_used_bytes']/g:.2f} GiB, "
          f"allocator peak {o['device_pool_peak_bytes']/g:.2f} GiB, decode at depth {o['depth']} {o['decode_tok_s']:.1f}; "
          f"prefill 512 {p['prefill_tok_s']:.1f} tok/s")
PY
(cd $R && tar czf kv-json.tgz *.json && rm -f *.json)
