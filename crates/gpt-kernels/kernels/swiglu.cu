// SwiGLU as in GPT-OSS (openai/gpt-oss `swiglu`), on separate gate and up tensors:
//   g = min(gate, limit); u = clamp(up, -limit, limit); out = g * sigmoid(alpha * g) * (u + 1)
// NaN inputs propagate (comparisons are written so that NaN is kept, unlike fminf).
#include <stdint.h>

// gate, up, out: f32 (n) contiguous. Grid-stride loop.
extern "C" __global__ void swiglu_oai_f32(const float *__restrict__ gate,
                                          const float *__restrict__ up, float *__restrict__ out,
                                          const uint64_t n, const float alpha, const float limit) {
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    for (uint64_t i = (uint64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float g = gate[i];
        g = g > limit ? limit : g;
        float u = up[i];
        u = u > limit ? limit : (u < -limit ? -limit : u);
        const float glu = g / (1.f + expf(-alpha * g));
        out[i] = glu * (u + 1.f);
    }
}
