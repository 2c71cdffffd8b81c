#!/usr/bin/env bash
# Device memory of gpt-oss-20b's shape at 8K context (issue #14) and `--cpu-moe 12` at both CPU
# precisions (issue #16), in one call of the device tool: the memory plan the loader checks
# (`plan_device_total_bytes`) beside the device memory in use and the allocator's peak after a
# 2048-token prefill at depth 8064 and 128 decoded tokens; then decode / prefill with the MoE
# blocks of 12 layers on the CPU, beside llama.cpp's `llama-bench --n-cpu-moe 12`.
# Carry in .carry/: gptoss.xz, llama-bench.xz.* (saved by coverage_check.sh).
. scripts/device/common.sh mem
. scripts/device/llama_build.sh llama-bench
step gen 20b
$B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
$B/gptoss inspect /tmp/20b.gguf --check --ctx 8192 --vram 16G 2>&1 | tail -12 | tee $R/check_8k.txt
M="--model /tmp/20b.gguf --device cuda --json"
step "8K: 8064 tokens of context (prefill in 2048-token chunks), decode 128; prefill 2048"
$B/gptoss bench $M --prompt-tokens 2048 --depth 8064 --gen-tokens 128 --reps 1 2>/dev/null | tail -1 | tee $R/ours_8k.json
for p in exact fast; do
  step "--cpu-moe 12, --cpu-precision $p"
  $B/gptoss bench $M --prompt-tokens 512 --gen-tokens 64 --reps 1 --cpu-moe 12 --cpu-precision $p 2>/dev/null | tail -1 | tee $R/ours_cpumoe12_$p.json
done
step "llama-bench --n-cpu-moe 12"
$LD/llama-bench -m /tmp/20b.gguf -ngl 99 -fa 1 -t $(nproc) -ncmoe 12 -p 512 -n 64 -r 1 -o json 2>/dev/null > $R/llama_cpumoe12.json
python3 - "$R" <<'PY'
import json, os, sys
R = sys.argv[1]
o = json.load(open(os.path.join(R, "ours_8k.json")))
g = 1 << 30
print(f"8K: plan {o['plan_device_total_bytes']/g:.2f} GiB, in use {o['device_mem_used_bytes']/g:.2f} GiB, "
      f"allocator peak {o['device_pool_peak_bytes']/g:.2f} GiB, decode {o['decode_tok_s']:.1f} tok/s at depth {o['depth']}")
ll = json.load(open(os.path.join(R, "llama_cpumoe12.json")))
lt = [r["avg_ts"] for r in ll if r.get("n_gen", 0) > 0][0]
lp = [r["avg_ts"] for r in ll if r.get("n_prompt", 0) > 0][0]
for p in ["exact", "fast"]:
    c = json.load(open(os.path.join(R, f"ours_cpumoe12_{p}.json")))
    print(f"--cpu-moe 12 {p}: decode {c['decode_tok_s']:.1f} vs llama {lt:.1f} ({c['decode_tok_s']/lt:.2f}x); "
          f"prefill512 {c['prefill_tok_s']:.1f} vs llama {lp:.1f} ({c['prefill_tok_s']/lp:.2f}x)")
PY
