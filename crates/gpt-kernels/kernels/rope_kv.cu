// The batched forward's RoPE and KV-pool write in one kernel (CUDA fast path): for row r of a
// fused QKV projection's output qkv f32 (t, (hq + 2 hkv) hd), NeoX RoPE at position pos[r]
// (cos, sin tables f32 (len, hd / 2), YaRN scale included) on its q and k heads; q goes to
// q_out f32 (t, hq hd), k and v (unrotated) to row dst[r] of the pool's buffers f32
// (rows, hkv, hd), f32 (rope_kv_rows) or f16 (rope_kv_rows_h). Grid (t), 256 threads over
// the (head, i) pairs of the row.
#include <stdint.h>
#include "kv.cuh"

template <typename KV>
__device__ __forceinline__ void rope_kv_body(const float *__restrict__ qkv,
                                             const float *__restrict__ cos_t,
                                             const float *__restrict__ sin_t,
                                             const uint32_t *__restrict__ pos,
                                             const uint32_t *__restrict__ dst, const uint32_t hq,
                                             const uint32_t hkv, const uint32_t hd,
                                             float *__restrict__ q_out, KV *__restrict__ k_pool,
                                             KV *__restrict__ v_pool) {
    const uint32_t r = blockIdx.x, half = hd / 2, heads = hq + 2 * hkv;
    const float *x = qkv + (uint64_t)r * heads * hd;
    const float *c = cos_t + (uint64_t)pos[r] * half;
    const float *s = sin_t + (uint64_t)pos[r] * half;
    const uint64_t row = dst[r];
    for (uint32_t idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
        const uint32_t head = idx / half, i = idx % half;
        float a = x[head * hd + i], b = x[head * hd + i + half];
        if (head < hq + hkv) {
            const float a2 = a * c[i] - b * s[i];
            b = b * c[i] + a * s[i];
            a = a2;
        }
        if (head < hq) {
            float *out = q_out + ((uint64_t)r * hq + head) * hd;
            out[i] = a;
            out[i + half] = b;
            continue;
        }
        KV *out = head < hq + hkv ? k_pool + (row * hkv + (head - hq)) * hd
                                  : v_pool + (row * hkv + (head - hq - hkv)) * hd;
        kv_store(out + i, a);
        kv_store(out + i + half, b);
    }
}

#define ROPE_KV_KERNEL(NAME, KV)                                                                 \
    extern "C" __global__ void NAME(const float *__restrict__ qkv, const float *__restrict__ cos_t, \
                                    const float *__restrict__ sin_t,                             \
                                    const uint32_t *__restrict__ pos,                            \
                                    const uint32_t *__restrict__ dst, const uint32_t hq,         \
                                    const uint32_t hkv, const uint32_t hd,                       \
                                    float *__restrict__ q_out, KV *__restrict__ k_pool,          \
                                    KV *__restrict__ v_pool) {                                   \
        rope_kv_body<KV>(qkv, cos_t, sin_t, pos, dst, hq, hkv, hd, q_out, k_pool, v_pool);       \
    }
ROPE_KV_KERNEL(rope_kv_rows, float)
ROPE_KV_KERNEL(rope_kv_rows_h, __half)
