# Sourced by the race scripts: `. scripts/device/llama_build.sh TARGET...` makes llama.cpp's
# TARGETs (e.g. llama-bench llama-batched-bench) available in $LD. Binaries an earlier call
# built come back as .carry/<target>.xz.* (xz'd, 15 MiB pieces) and are unpacked; if any
# target is missing, llama.cpp (.carry/llama-src.tgz: the llama-cpp-python 0.3.36 sdist's
# llama.cpp, trimmed) is built for all of them in the background, once per machine. When
# /tmp/llama-build.rc exists the build is over (its exit status); /tmp/llama-bins.carried
# says nothing was built.
LD=/tmp/llama/llama.cpp/build/bin
if [ ! -f /tmp/llama-build.started ]; then
  missing=0
  for t in "$@"; do
    if ls .carry/$t.xz.* > /dev/null 2>&1; then
      mkdir -p $LD && cat .carry/$t.xz.* | xz -dc > $LD/$t && chmod +x $LD/$t
    else
      missing=1
    fi
  done
  touch /tmp/llama-build.started
  if [ $missing = 0 ]; then
    touch /tmp/llama-bins.carried && echo 0 > /tmp/llama-build.rc
    echo "llama.cpp binaries from .carry: $*"
  else
    mkdir -p /tmp/llama && tar xzf .carry/llama-src.tgz -C /tmp/llama
    # In its own session (setsid): the device tool ends a call's processes when it returns,
    # except such ones, so a build a call started goes on for the next call on the same warm
    # machine.
    setsid bash -c 'cd /tmp/llama/llama.cpp && cmake -B build -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release \
        > /tmp/llama-cmake.log 2>&1 && cmake --build build -j12 --target "$@" > /tmp/llama-build.log 2>&1
      echo $? > /tmp/llama-build.rc' _ "$@" < /dev/null > /dev/null 2>&1 &
  fi
fi
