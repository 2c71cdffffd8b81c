# Sourced by the session-7 device scripts: `. scripts/device/common.sh NAME` sets the CUDA
# library path and the model cache, makes /tmp/bin and the results folder $R = $OUT/NAME,
# unpacks every .carry/*.xz binary into /tmp/bin ($B) (a .tar.xz is extracted: binaries xz'd
# together, with a dictionary that spans them, are a quarter of their separate sizes; see
# pack_carry.sh), and defines `step` (a timed heading), `unpack DIR DEST` (xz'd binaries of
# DIR into DEST), `tok` and `kernel_tests NAME...`.
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTOSS_CACHE=/tmp/gc
B=/tmp/bin; R=${OUT:-/tmp}/$1; mkdir -p $B $R
step() { echo "== $* (${SECONDS}s)"; }
unpack() {
  for f in "$1"/*.xz; do
    [ -f "$f" ] || continue
    case "$f" in
      *.tar.xz) tar xJf "$f" -C "$2" ;;
      *) xz -dc "$f" > "$2/$(basename "$f" .xz)" && chmod +x "$2/$(basename "$f" .xz)" ;;
    esac
  done
}
unpack .carry $B
# `tok`: "decode X prefill Y" from the last line of `gptoss bench --json` on stdin.
tok() { python3 -c "import json,sys; d=json.loads(sys.stdin.read().strip().splitlines()[-1]); print(f\"decode {d['decode_tok_s']:.1f} prefill {d['prefill_tok_s']:.1f}\")"; }
# `kernel_tests NAME...`: runs each carried CUDA test binary of $B, printing its summary lines.
kernel_tests() {
  for t in "$@"; do
    [ -x $B/$t ] && $B/$t 2>&1 | grep -E "test result|FAILED|panicked|seed"
  done
}
