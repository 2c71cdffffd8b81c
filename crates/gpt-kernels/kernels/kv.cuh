// KV cache elements, f32 or f16: loads widen to f32, stores round to nearest. The kernels that
// read or write a KV cache are templates over the element type, instantiated once per type
// (`NAME` for f32, `NAME_h` for f16).
#pragma once
#include <cuda_fp16.h>

// Two elements (8- or 4-byte aligned) as f32.
__device__ __forceinline__ float2 kv_load2(const float *p) { return *(const float2 *)p; }
__device__ __forceinline__ float2 kv_load2(const __half *p) {
    return __half22float2(*(const __half2 *)p);
}

// acc + q[0..8) · k[0..8), one FMA after another in element order; k 16-byte aligned (eight
// cache elements), q 16-byte aligned f32 (read as a broadcast when every lane reads the same).
__device__ __forceinline__ float kv_dot8_f(const float *k8, const float *q, float acc) {
    const float4 x = *(const float4 *)q, y = *(const float4 *)(q + 4);
    acc = fmaf(x.x, k8[0], acc);
    acc = fmaf(x.y, k8[1], acc);
    acc = fmaf(x.z, k8[2], acc);
    acc = fmaf(x.w, k8[3], acc);
    acc = fmaf(y.x, k8[4], acc);
    acc = fmaf(y.y, k8[5], acc);
    acc = fmaf(y.z, k8[6], acc);
    return fmaf(y.w, k8[7], acc);
}

__device__ __forceinline__ float kv_dot8(const float *k, const float *q, float acc) {
    const float4 a = *(const float4 *)k, b = *(const float4 *)(k + 4);
    const float k8[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
    return kv_dot8_f(k8, q, acc);
}

__device__ __forceinline__ float kv_dot8(const __half *k, const float *q, float acc) {
    const uint4 u = *(const uint4 *)k;
    const float2 a = __half22float2(*(const __half2 *)&u.x);
    const float2 b = __half22float2(*(const __half2 *)&u.y);
    const float2 c = __half22float2(*(const __half2 *)&u.z);
    const float2 d = __half22float2(*(const __half2 *)&u.w);
    const float k8[8] = {a.x, a.y, b.x, b.y, c.x, c.y, d.x, d.y};
    return kv_dot8_f(k8, q, acc);
}

__device__ __forceinline__ void kv_store(float *p, float x) { *p = x; }
__device__ __forceinline__ void kv_store(__half *p, float x) { *p = __float2half_rn(x); }
