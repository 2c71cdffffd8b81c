#!/usr/bin/env bash
# Per-kernel times of one fused decode step (ncu, 20B-shaped file, no CUDA graph so that each
# launch is profiled) and the stage breakdown of a 2048-token prefill; with PREFILL_KERNELS=1,
# also ncu over ~1,000 consecutive launches in the middle of that prefill (a layer or so), to
# tell GPU time from host overhead in the expert loop. Carry .carry/gptoss.xz.
# Prints one line per kernel name: total µs, launches, µs per launch.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export PATH=/usr/local/cuda/bin:$PATH
B=/tmp/bin; R=${OUT:-/tmp}/prof; mkdir -p $B $R
[ -x $B/gptoss ] || { xz -dc .carry/gptoss.xz > $B/gptoss && chmod +x $B/gptoss; }
[ -f /tmp/20b.gguf ] || $B/gptoss gen-model --preset 20b --out /tmp/20b.gguf 2>&1 | tail -1
M="--model /tmp/20b.gguf --device cuda --json"
$B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 0 --reps 1 --profile 2>&1 | tail -1 | tee $R/prefill_profile.json
L=${LAYERS:-24}
N=$(( L * 10 + 2 ))
ncu --metrics gpu__time_duration.sum -k regex:dec_ --launch-skip $(( N * 4 )) --launch-count $N --csv \
  $B/gptoss bench $M --prompt-tokens 0 --gen-tokens 8 --reps 1 --no-cuda-graph > $R/ncu.csv 2>$R/ncu.err
summarize() {
python3 - "$1" <<'PY'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
rows = rows[next(i for i, r in enumerate(rows) if "Kernel Name" in r):]
hdr = rows[0]; ki = hdr.index("Kernel Name"); vi = hdr.index("Metric Value"); ui = hdr.index("Metric Unit")
tot = collections.defaultdict(float); cnt = collections.Counter()
for r in rows[1:]:
    v = float(r[vi].replace(",", "")); u = r[ui]
    us = {"ns": 1e-3, "nsecond": 1e-3, "us": 1.0, "usecond": 1.0, "ms": 1e3, "msecond": 1e3}[u] * v
    name = r[ki].split("(")[0]; tot[name] += us; cnt[name] += 1
s = sum(tot.values())
for k, v in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"{k[:40]:40} {v:9.1f} us  {cnt[k]:5d} launches  {v / cnt[k]:7.2f} us each")
print(f"{'total':22} {s:9.1f} us (kernel time only)")
PY
}
summarize $R/ncu.csv
tail -3 $R/ncu.err
if [ "${PREFILL_KERNELS:-}" = 1 ]; then
  ncu --metrics gpu__time_duration.sum --launch-skip 3000 --launch-count 1000 --csv \
    $B/gptoss bench $M --prompt-tokens 2048 --gen-tokens 0 --reps 1 --no-fast-decode \
    > $R/ncu_prefill.csv 2>$R/ncu_prefill.err
  summarize $R/ncu_prefill.csv
fi
