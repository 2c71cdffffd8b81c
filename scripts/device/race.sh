#!/usr/bin/env bash
# gptoss vs llama.cpp on the same GPU (H100 or H200) and the same gpt-oss-20b-shaped random GGUF, in one
# call of the device tool. Carry in .carry/: gptoss.xz (from `cargo xtask cuda-build`, xz'd)
# and llama-src.tgz (llama.cpp from the llama-cpp-python 0.3.36 sdist on PyPI, trimmed; not
# committed). Prints one table: decode tok/s at depth 0/4096/32768, prefill tok/s for
# 512/2048 tokens, time to first token, device memory, ours/llama.cpp, GB/s vs roofline.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
B=/tmp/bin; R=${OUT:-/tmp}/race; mkdir -p $B $R
# llama-bench: carried from an earlier call (.carry/llama-bench.xz.*) or built in the
# background (started once; a caller may have started it).
. scripts/device/llama_build.sh llama-bench
LB=$LD/llama-bench
[ "${START_BUILD_ONLY:-}" = 1 ] && exit 0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee /tmp/gpu.txt
xz -dc ${GPTOSS_XZ:-.carry/gptoss.xz} > $B/gptoss && chmod +x $B/gptoss
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
# Time nothing while the compiler shares the host: wait for the build first.
while [ ! -f /tmp/llama-build.rc ]; do sleep 5; done
echo "llama.cpp build finished (rc $(cat /tmp/llama-build.rc)) after ${SECONDS}s"
M="--model /tmp/20b.gguf --device cuda --quantized-dense --json"
$B/gptoss bench $M --prompt-tokens 512 --gen-tokens 128 --reps 3 > $R/ours_p512.json 2>/dev/null
$B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 0 --reps 3 > $R/ours_p2048.json 2>/dev/null
$B/gptoss bench $M --prompt-tokens 0 --gen-tokens 128 --depth 4096 --reps 1 > $R/ours_d4096.json 2>/dev/null
$B/gptoss bench $M --prompt-tokens 0 --gen-tokens 128 --depth 32768 --reps 1 > $R/ours_d32768.json 2>/dev/null
if [ "$(cat /tmp/llama-build.rc)" = 0 ]; then
  # Keep the static binary for the next call (files back are at most 16 MiB each).
  [ -f /tmp/llama-bins.carried ] || [ -f $R/llama-bench.xz.aa ] || (strip -o /tmp/llama-bench.s $LB && xz -T16 -6 -c /tmp/llama-bench.s | split -b 15M - $R/llama-bench.xz.)
  $LB -m /tmp/20b.gguf -ngl 99 -fa 1 -p 512,2048 -n 128 -r 3 -o json > $R/llama_pp.json 2>/dev/null
  $LB -m /tmp/20b.gguf -ngl 99 -fa 1 -p 0 -n 128 -d 4096,32768 -r 1 -o json > $R/llama_tg.json 2>/dev/null
else
  tail -20 /tmp/llama-build.log
fi
python3 - "$R" <<'PY'
import json, os, sys
R = sys.argv[1]
GPU = open("/tmp/gpu.txt").read()
ROOF = 4800 if "H200" in GPU else 3350  # GB/s: HBM3e (H200) or HBM3 (H100 SXM)
def load(n):
    try: return json.load(open(os.path.join(R, n)))
    except Exception: return None
o512, o2048, o4k, o32k = (load(f) for f in ["ours_p512.json", "ours_p2048.json", "ours_d4096.json", "ours_d32768.json"])
lp, lt = load("llama_pp.json") or [], load("llama_tg.json") or []
def ll(pp, tg, depth):
    for r in lp + lt:
        if r.get("n_prompt") == pp and r.get("n_gen") == tg and r.get("n_depth", 0) == depth:
            return r.get("avg_ts")
WEIGHT_BYTES_PER_TOKEN = 2.575e9  # spec: bytes read per decoded token (issue 7)
rows = [
    ("decode tok/s, depth 0", o512 and o512["decode_tok_s"], ll(0, 128, 0)),
    ("decode tok/s, depth 4096", o4k and o4k["decode_tok_s"], ll(0, 128, 4096)),
    ("decode tok/s, depth 32768", o32k and o32k["decode_tok_s"], ll(0, 128, 32768)),
    ("prefill tok/s, 512", o512 and o512["prefill_tok_s"], ll(512, 0, 0)),
    ("prefill tok/s, 2048", o2048 and o2048["prefill_tok_s"], ll(2048, 0, 0)),
]
print(f"{'':28} {'gptoss':>10} {'llama.cpp':>10} {'ratio':>7}")
for name, a, b in rows:
    r = f"{a / b:.2f}x" if a and b else "-"
    print(f"{name:28} {a or 0:10.1f} {b or 0:10.1f} {r:>7}")
if o512:
    print(f"time to first token (512-token prompt): {o512['time_to_first_token_ms']:.1f} ms")
    print(f"device memory in use (gptoss): {o512['device_mem_used_bytes'] / 2**30:.2f} GiB")
    if o512.get("device_pool_peak_bytes"):
        print(f"peak device allocations (gptoss): {o512['device_pool_peak_bytes'] / 2**30:.2f} GiB")
    gbs = o512["decode_tok_s"] * WEIGHT_BYTES_PER_TOKEN / 1e9
    print(f"decode at depth 0 moves ~{gbs:.0f} GB/s of weights, {100 * gbs / ROOF:.0f}% of the ~{ROOF / 1000:.2f} TB/s roofline ({GPU.split(',')[0]})")
PY
# At most 8 files come back: the JSON in one archive, then the llama-bench parts.
(cd $R && tar czf race-json.tgz *.json && rm -f *.json)
