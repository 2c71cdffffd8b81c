#!/usr/bin/env bash
# Builds llama.cpp's CPU `llama-bench` from the llama-cpp-python sdist on PyPI, once, into
# target/llamacpp-cpu/ (cmake and ninja come from PyPI into target/venv-bench). Prints the
# binary's path. Re-running reuses the build.
set -euo pipefail
VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DIR="$ROOT/target/llamacpp-cpu"
BIN="$DIR/build/bin/llama-bench"
if [[ -x "$BIN" ]]; then echo "$BIN"; exit 0; fi
mkdir -p "$DIR"
VENV="$ROOT/target/venv-bench"
if [[ ! -x "$VENV/bin/cmake" ]]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install -q cmake ninja scikit-build-core >&2
fi
if [[ ! -d "$DIR/src" ]]; then
  "$VENV/bin/pip" download -q --no-deps --no-binary llama-cpp-python --no-build-isolation "llama-cpp-python==$VERSION" -d "$DIR/sdist" >&2
  mkdir -p "$DIR/src"
  tar -xzf "$DIR"/sdist/llama_cpp_python-"$VERSION".tar.gz -C "$DIR/src" --strip-components=1
fi
export PATH="$VENV/bin:$PATH"
# No AMX: on the Sapphire-Rapids-class VMs here (cpuinfo lists amx_tile / amx_int8) ggml's AMX
# matmul faults at its first `ldtilecfg` (general protection fault, on the tiny and the 20B-shaped
# files alike, session 15); gptoss uses no AMX either. GCC keeps an explicit -mno-* over
# -march=native's, so the AMX code is compiled out and the rest stays native.
NO_AMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
cmake -S "$DIR/src/vendor/llama.cpp" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_C_FLAGS="$NO_AMX" -DCMAKE_CXX_FLAGS="$NO_AMX" -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=ON >&2
cmake --build "$DIR/build" --target llama-bench -j "$(nproc)" >&2
echo "$BIN"
