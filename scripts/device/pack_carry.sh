#!/usr/bin/env bash
# Packs the CUDA build for the device tool: `cargo xtask cuda-build` (ARCH, default 90) puts the
# stripped `gptoss` and CUDA test binaries in target/cuda/dist; this xz's them together into
# .carry/bins.tar.xz with a dictionary that spans them (they share candle and the kernels' PTX:
# ~21 MB for gptoss + four test binaries, against ~81 MB xz'd one by one, over the 64 MiB a call
# may carry). `scripts/device/common.sh` extracts it into /tmp/bin on the device. Also writes
# .carry/llama-src.tgz (llama.cpp from the llama-cpp-python sdist, trimmed) when it is missing.
# .carry/ must be ignored (`.git/info/exclude`) and named in the call's `carry`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$ROOT"
BINS="${BINS:-gptoss cuda_decode cuda_prefill cuda_smoke cuda_kv}"
mkdir -p .carry
EXCLUDE=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$EXCLUDE")"
grep -qxF '.carry/' "$EXCLUDE" 2> /dev/null || echo '.carry/' >> "$EXCLUDE"
[ "${SKIP_BUILD:-0}" = 1 ] || cargo xtask cuda-build --arch "${ARCH:-90}" >&2
(cd target/cuda/dist && tar cf - $BINS) | xz -T1 --lzma2=preset=6,dict=256MiB -c > .carry/bins.tar.xz
if [ ! -f .carry/llama-src.tgz ]; then
  VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
  TMP=$(mktemp -d)
  # The sdist itself, from the package index (`pip download` would build its metadata first,
  # cmake from source included).
  URL=$(curl -sf https://pypi.org/simple/llama-cpp-python/ \
    | grep -o "https://[^\"#]*llama_cpp_python-$VERSION\.tar\.gz" | head -1)
  curl -sfL -o "$TMP/sdist.tar.gz" "$URL"
  mkdir -p "$TMP/src" && tar xzf "$TMP/sdist.tar.gz" -C "$TMP/src" --strip-components=1
  tar czf .carry/llama-src.tgz -C "$TMP/src/vendor" --exclude=llama.cpp/models --exclude=llama.cpp/docs \
    --exclude=llama.cpp/tests --exclude=llama.cpp/benches --exclude=llama.cpp/tools/ui --exclude=llama.cpp/.git llama.cpp
  rm -rf "$TMP"
fi
ls -la .carry >&2
du -sh .carry >&2
