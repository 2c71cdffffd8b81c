// SwiGLU-OAI (swiglu.cuh) on separate gate and up tensors.
#include <stdint.h>
#include "swiglu.cuh"

// gate, up, out: f32 (n) contiguous. Grid-stride loop.
extern "C" __global__ void swiglu_oai_f32(const float *__restrict__ gate,
                                          const float *__restrict__ up, float *__restrict__ out,
                                          const uint64_t n, const float alpha, const float limit) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = swiglu_oai(gate[i], up[i], alpha, limit);
    }
}
