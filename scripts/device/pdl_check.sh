#!/usr/bin/env bash
# #14: programmatic dependent launch (PDL) in the fused decode (`kernels/pdl.cuh`). The kernel
# tests (`cuda_decode`, `cuda_kv`: each decode kernel against its CPU loop, now launched with
# PDL), `compare-devices` on tiny and on 2 layers of 20B shape, and
# `compare-batch`; then decode tok/s with PDL and without (`GPTOSS_PDL=0`) on the 20B-shaped file,
# alternating, ROUNDS rounds (default 2): depth 0 (512-token prompt, 3 repetitions) and depth 32768.
# Carry in .carry/: gptoss.xz, cuda_decode.xz, cuda_kv.xz. Everything into one log ($R/log.txt)
# and one archive of JSON.
. scripts/device/common.sh pdl
# PDL is opt-in (GPTOSS_PDL=1) until measured here; every step below runs with it but the
# explicit `without` runs.
export GPTOSS_PDL=1
{
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
step "kernel tests"
kernel_tests cuda_decode cuda_kv
step "compare-devices"
echo "tiny: $($B/gptoss compare-devices --model tiny --device cuda 2>&1 | tail -1)"
$B/gptoss gen-model --preset 20b --layers 2 --out /tmp/20b2.gguf > /dev/null 2>&1
echo "20b2: $($B/gptoss compare-devices --model /tmp/20b2.gguf --device cuda 2>&1 | tail -1)"
echo "tiny without PDL: $(GPTOSS_PDL=0 $B/gptoss compare-devices --model tiny --device cuda 2>&1 | tail -1)"
step "compare-batch"
$B/gptoss compare-batch --model tiny --device cuda 2>&1 | tail -1
step "gen 20b"
# A caller may have started llama.cpp's build (llama_build.sh): time nothing beside it.
[ -f /tmp/llama-build.started ] && while [ ! -f /tmp/llama-build.rc ]; do sleep 5; done
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
M="--model /tmp/20b.gguf --device cuda --json"
for round in $(seq 1 ${ROUNDS:-2}); do
  for pdl in 1 0; do
    step "bench GPTOSS_PDL=$pdl, round $round"
    GPTOSS_PDL=$pdl $B/gptoss bench $M --prompt-tokens 512 --gen-tokens 128 --reps 3 2>/dev/null \
      | tail -1 > $R/d0_pdl${pdl}_r$round.json
    GPTOSS_PDL=$pdl $B/gptoss bench $M --prompt-tokens 0 --gen-tokens 128 --depth 32768 --reps 1 \
      2>/dev/null | tail -1 > $R/d32k_pdl${pdl}_r$round.json
  done
done
ROUNDS=${ROUNDS:-2} python3 - "$R" <<'PY'
import json, os, sys
R = sys.argv[1]
def get(n, key):
    try: return json.load(open(os.path.join(R, n)))[key]
    except Exception: return None
print(f"{'':34} {'PDL':>9} {'no PDL':>9} {'ratio':>6}")
for r in range(1, int(os.environ.get('ROUNDS', '2')) + 1):
    for name, f, key in (("decode tok/s, depth 0", "d0", "decode_tok_s"),
                         ("prefill 512 tok/s", "d0", "prefill_tok_s"),
                         ("decode tok/s, depth 32768", "d32k", "decode_tok_s")):
        a, b = get(f"{f}_pdl1_r{r}.json", key), get(f"{f}_pdl0_r{r}.json", key)
        ratio = f"{a / b:.3f}" if a and b else "-"
        print(f"{name + f' (round {r})':34} {a or 0:9.1f} {b or 0:9.1f} {ratio:>6}")
PY
step "done"
} 2>&1 | tee $R/log.txt
(cd $R && tar czf json.tgz *.json && rm -f *.json)
