// KV cache elements, f32 or f16: loads widen to f32, stores round to nearest. The kernels that
// read or write a KV cache are templates over the element type, instantiated once per type
// (`NAME` for f32, `NAME_h` for f16).
#pragma once
#include <cuda_fp16.h>

__device__ __forceinline__ float4 kv_load4(const float *p) { return *(const float4 *)p; }

// Four halves (8-byte aligned) as f32.
__device__ __forceinline__ float4 kv_load4(const __half *p) {
    const uint2 u = *(const uint2 *)p;
    const float2 a = __half22float2(*(const __half2 *)&u.x);
    const float2 b = __half22float2(*(const __half2 *)&u.y);
    return make_float4(a.x, a.y, b.x, b.y);
}

__device__ __forceinline__ void kv_store(float *p, float x) { *p = x; }
__device__ __forceinline__ void kv_store(__half *p, float x) { *p = __float2half_rn(x); }
