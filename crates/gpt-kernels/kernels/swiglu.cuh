// SwiGLU as in GPT-OSS (openai/gpt-oss `swiglu`), shared by every kernel that applies it:
//   g = min(gate, limit); u = clamp(up, -limit, limit); out = g * sigmoid(alpha * g) * (u + 1)
// NaN inputs propagate (comparisons are written so that NaN is kept, unlike fminf).
#pragma once

__device__ __forceinline__ float swiglu_oai(float g, float u, const float alpha, const float limit) {
    g = g > limit ? limit : g;
    u = u > limit ? limit : (u < -limit ? -limit : u);
    return g / (1.f + expf(-alpha * g)) * (u + 1.f);
}
