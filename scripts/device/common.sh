# Sourced by the session-7 device scripts: `. scripts/device/common.sh NAME` sets the CUDA
# library path and the model cache, makes /tmp/bin and the results folder $R = $OUT/NAME,
# unpacks every .carry/*.xz binary into /tmp/bin ($B), and defines `step` (a timed heading)
# and `unpack DIR DEST` (xz'd binaries of DIR into DEST).
set -uo pipefail
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTOSS_CACHE=/tmp/gc
B=/tmp/bin; R=${OUT:-/tmp}/$1; mkdir -p $B $R
step() { echo "== $* (${SECONDS}s)"; }
unpack() { for f in "$1"/*.xz; do [ -f "$f" ] && xz -dc "$f" > "$2/$(basename "$f" .xz)" && chmod +x "$2/$(basename "$f" .xz)"; done; }
unpack .carry $B
